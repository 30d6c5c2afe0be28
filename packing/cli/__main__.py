"""``python -m packing.cli``: the ``packed-bert`` command."""

import sys

from packing.cli import main

sys.exit(main())
