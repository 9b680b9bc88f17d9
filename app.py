"""All-in-one launcher: `python app.py` runs the embedded queue server, the workers and the web page."""

import sys

from mochi_app.config import Settings, SettingsError
from mochi_app.connections import QueueUnavailable
from mochi_app.logs import configure_logging
from mochi_app.supervisor import run_all


def main() -> int:
    configure_logging()
    try:
        run_all(Settings.from_env())
    except SettingsError as exc:  # a bad MOCHI_* value, a folder it cannot write, nobody could sign in
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    except QueueUnavailable as exc:  # its queue server did not start (or one already runs for the folder)
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
