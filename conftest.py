"""Settings every test in the repository runs under."""

from __future__ import annotations

import os

# No test compiles the native kernels by surprise (a 1-2 minute build on a
# small machine): an environment without a prebuilt lore_kernels._C runs the
# torch backend. The tests of the just-in-time build turn it on themselves.
os.environ.setdefault("LORE_JIT", "0")
