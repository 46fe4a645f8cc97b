"""Load the optional native kernels and say which devices and ops they cover.

The kernels register the ``torch.ops.lore`` ops from one of two places:

- ``lore_kernels._C``, built ahead of time (``bash scripts/setup.sh``, or any
  install whose build could import torch); imported with the package;
- a just-in-time build (``_jit.py``) when no ``_C`` loads, run on the first
  question about the kernels (the first op call or ``backend()``), so that
  ``import lore_kernels`` stays fast and a plain ``--help`` never compiles.

Either is optional (torchao style): when neither is there, the package logs
one line and runs on the torch backend.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from . import _jit

log = logging.getLogger("lore_kernels")

BUILD_HINT = (
    "build it with `bash scripts/setup.sh` (or `pip install --no-build-isolation -e "
    "packages/lore-kernels`) and without LORE_BUILD_EXT=0, or let it compile on first "
    "use (LORE_JIT unset, ninja and a C++ compiler installed)"
)

LOAD_ERROR: str | None = None  # why no kernels are loaded; None once they are
_prebuilt = True
_prebuilt_failed = False  # a _C file is there but does not load (e.g. built for another torch)
try:
    from . import _C  # noqa: F401  (importing registers torch.ops.lore)
except ImportError as err:
    _prebuilt = False
    LOAD_ERROR = str(err)
    _prebuilt_failed = any(p.suffix in (".so", ".pyd") for p in Path(__file__).parent.glob("_C.*"))

_lock = threading.Lock()
_on_load: list[Callable[[], None]] = []


def when_loaded(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the kernels are loaded: now, or after a just-in-time build."""
    if LOAD_ERROR is None:
        callback()
    else:
        _on_load.append(callback)


_loaded: bool | None = True if _prebuilt else None  # None: not decided yet


def ensure() -> bool:
    """True when ``torch.ops.lore`` is registered; compiles it first if it must and may."""
    global LOAD_ERROR, _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:  # another thread decided while this one waited
            return _loaded
        if not _jit.enabled():
            if _prebuilt_failed:
                log.warning(
                    "lore_kernels: native extension failed to load (%s); using the torch backend",
                    LOAD_ERROR,
                )
            else:
                log.info(
                    "lore_kernels: native extension not built (LORE_JIT=0); using the torch backend"
                )
            _loaded = False
            return False
        if _prebuilt_failed:
            log.warning(
                "lore_kernels: native extension failed to load (%s); trying a just-in-time build",
                LOAD_ERROR,
            )
        error = _jit.load()
        LOAD_ERROR = error
        _loaded = error is None
        if _loaded:
            for callback in _on_load:
                callback()
            _on_load.clear()
        return _loaded


def has_kernel(device_type: str) -> bool:
    """True when ``torch.ops.lore.lowrank_bt`` has a kernel for ``"cpu"`` or ``"cuda"``."""
    if not ensure():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}[device_type]
    return torch._C._dispatch_has_kernel_for_dispatch_key("lore::lowrank_bt", key)


@functools.cache  # asked on every op call; the loaded library does not change
def has_op(name: str) -> bool:
    """True when the loaded kernels define ``torch.ops.lore.<name>`` (an older build may not)."""
    if not ensure():
        return False
    try:
        torch._C._get_schema(f"lore::{name}", "")
    except RuntimeError:
        return False
    return True
