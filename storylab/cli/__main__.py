"""``python -m storylab.cli``: the ``storylab`` command."""

import sys

from storylab.cli import main

sys.exit(main())
