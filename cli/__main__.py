"""`python -m ftc.cli ...`: the same command as `ftc ...`."""

import sys

from ftc.cli.main import main

sys.exit(main())
