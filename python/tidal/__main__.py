"""`python -m tidal`: the same as the `tidal` command."""

import sys

from .cli import main

sys.exit(main())
