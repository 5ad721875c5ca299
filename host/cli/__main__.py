"""`python -m cellsp.host.cli`: the `cellsp` command."""

import sys

from . import main

sys.exit(main())
