"""``python -m storylab``: the same command as ``storylab``."""

import sys

from storylab.cli import main

sys.exit(main())
