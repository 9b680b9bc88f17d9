"""All-in-one launcher: `python app.py` runs the embedded queue server and the workers."""

import logging
import sys

from mochi_app.config import Settings, SettingsError
from mochi_app.supervisor import run_all


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    run_all(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
