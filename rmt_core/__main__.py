"""``python -m rmt_core ...``: the rmt-lens command line (see rmt_core.cli)."""
import sys

from .cli import main

sys.exit(main())
