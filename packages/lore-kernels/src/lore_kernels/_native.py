"""Load the optional compiled extension and say which native kernels it holds.

The extension (``lore_kernels._C``) registers the ``torch.ops.lore`` ops. It
is optional (torchao style): when it was not built, or fails to load (for
example a CUDA build under a CPU-only torch), the package still imports, logs
one line and runs on the torch backend.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger("lore_kernels")

BUILD_HINT = (
    "build it with `bash scripts/setup.sh` (or `pip install --no-build-isolation -e "
    "packages/lore-kernels`) and without LORE_BUILD_EXT=0"
)

LOAD_ERROR: str | None = None
try:
    from . import _C  # noqa: F401  (importing registers torch.ops.lore)
except ImportError as err:
    LOAD_ERROR = str(err)
    built = any(p.suffix in (".so", ".pyd") for p in Path(__file__).parent.glob("_C.*"))
    if not built:
        log.info("lore_kernels: native extension not built; using the torch backend")
    else:
        log.warning(
            "lore_kernels: native extension failed to load (%s); using the torch backend", err
        )


def has_kernel(device_type: str) -> bool:
    """True when ``torch.ops.lore.lowrank_bt`` has a kernel for ``"cpu"`` or ``"cuda"``."""
    if LOAD_ERROR is not None:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}[device_type]
    return torch._C._dispatch_has_kernel_for_dispatch_key("lore::lowrank_bt", key)


@functools.cache  # asked on every op call; the loaded library does not change
def has_op(name: str) -> bool:
    """True when the loaded extension defines ``torch.ops.lore.<name>`` (an older build may not)."""
    if LOAD_ERROR is not None:
        return False
    try:
        torch._C._get_schema(f"lore::{name}", "")
    except RuntimeError:
        return False
    return True
