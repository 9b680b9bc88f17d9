"""All-in-one launcher: `python app.py` runs the embedded queue server, the workers and the web page."""

import sys

from mochi_app.config import Settings, SettingsError
from mochi_app.logs import configure_logging
from mochi_app.supervisor import run_all


def main() -> int:
    configure_logging()
    try:
        run_all(Settings.from_env())
    except SettingsError as exc:  # a bad MOCHI_* value, or a public address nobody could sign in to
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
