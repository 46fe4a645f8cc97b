"""``python -m lore_train.serve`` is ``lore-serve``."""

import sys

from .cli import entry

sys.exit(entry())
