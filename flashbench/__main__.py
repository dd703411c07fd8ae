"""``python -m flashbench``: the ``flashbench`` command."""

import sys

from .cli import main

sys.exit(main())
