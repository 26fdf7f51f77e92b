"""`python -m mgrd ...` runs the `mgrd` command line (the same as the installed `mgrd` script)."""

import sys

from mgrd.cli import main

sys.exit(main())
