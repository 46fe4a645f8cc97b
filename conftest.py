"""Settings every test in the repository runs under."""

from __future__ import annotations

import os

import pytest
import torch

# No test compiles the native kernels by surprise (a 1-2 minute build on a
# small machine): an environment without a prebuilt lore_kernels._C runs the
# torch backend. The tests of the just-in-time build turn it on themselves.
os.environ.setdefault("LORE_JIT", "0")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models gain nothing from threads, and
    spinning ones stall a busy machine (use with ``pytest.mark.usefixtures``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
