"""``python -m tools.cli``: the same as ``python -m tools``."""

import sys

from tools.cli import main

sys.exit(main())
