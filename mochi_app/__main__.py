"""`python -m mochi_app ...`."""

import sys

from mochi_app.cli import main

sys.exit(main())
