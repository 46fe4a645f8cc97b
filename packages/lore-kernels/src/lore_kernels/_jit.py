"""Build the native kernels on first use when no prebuilt ``_C`` came with the install.

``pip install packages/lore-kernels`` under pip's build isolation has no torch
to compile against, so the wheel carries the C++/CUDA sources instead
(``lore_kernels/csrc``). The first op call then compiles them once with
``torch.utils.cpp_extension.load`` and ninja into a cache keyed by the torch
version, the Python version, the flags and a hash of every source file;
later processes load the cached library in milliseconds.

    LORE_JIT=0             never compile: the torch backend runs instead
    LORE_KERNELS_CACHE=DIR where the builds live (default ~/.cache/lore_kernels)
    LORE_BUILD_CUDA=0      compile the CPU kernels only

A failed compile is one warning and the torch backend; the failure is kept
(``failed.log`` in the build folder) so that later processes do not spend
another minute on it: delete the folder to retry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import _buildspec

log = logging.getLogger("lore_kernels")

LIBRARY = "lore_kernels_jit"  # the shared library's name inside the build folder
_OFF = ("0", "false", "no", "off")


def enabled() -> bool:
    """False when LORE_JIT is 0/false/no/off."""
    return os.environ.get("LORE_JIT", "1").strip().lower() not in _OFF


def source_dir() -> Path | None:
    """The csrc/ folder: inside the installed package, else the source tree's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parent.parent / "csrc"):
        if (candidate / _buildspec.CPU_SOURCES[0]).is_file():
            return candidate
    return None


def cache_root() -> Path:
    """$LORE_KERNELS_CACHE, else $XDG_CACHE_HOME/lore_kernels, else ~/.cache/lore_kernels."""
    if os.environ.get("LORE_KERNELS_CACHE"):
        return Path(os.environ["LORE_KERNELS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lore_kernels"


def _wants_cuda() -> bool:
    flag = os.environ.get("LORE_BUILD_CUDA", "1").strip().lower() not in _OFF
    return flag and torch.version.cuda is not None and torch.cuda.is_available()


def _cuda_arch() -> str:
    """The architectures a CUDA build targets: TORCH_CUDA_ARCH_LIST, else the visible GPUs'."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in caps)


def build_dir(src: Path, with_cuda: bool) -> Path:
    """The cache folder of this torch, Python, flag set and source content."""
    digest = hashlib.sha256()
    for part in (
        torch.__version__,
        str(torch.version.cuda),
        sys.version,
        platform.machine(),
        repr((_buildspec.CXX_FLAGS, _buildspec.LINK_FLAGS, _buildspec.NVCC_FLAGS)),
        _cuda_arch() if with_cuda else "cpu",
    ):
        digest.update(part.encode() + b"\0")
    for path in sorted(p for p in src.rglob("*") if p.suffix in _buildspec.SOURCE_SUFFIXES):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    device = f"cu{torch.version.cuda}" if with_cuda else "cpu"
    version = torch.__version__.replace("+", "_")
    tag = f"torch{version}-py{sys.version_info.major}{sys.version_info.minor}-{device}"
    return cache_root() / f"{tag}-{digest.hexdigest()[:16]}"


def load() -> str | None:
    """Load the kernels built for this environment, compiling them first if needed.

    Returns None once ``torch.ops.lore`` is registered, else why not (already
    logged as one line).
    """
    src = source_dir()
    if src is None:
        msg = "no prebuilt extension and no C++ sources to compile"
        log.info("lore_kernels: %s; using the torch backend", msg)
        return msg
    with_cuda = _wants_cuda()
    folder = build_dir(src, with_cuda)
    library = folder / f"{LIBRARY}.so"
    failed = folder / "failed.log"
    if (folder / "ok").is_file() and library.is_file():
        torch.ops.load_library(str(library))
        return None
    if failed.is_file():
        msg = f"an earlier just-in-time build failed (see {failed}; delete {folder} to retry)"
        log.warning("lore_kernels: %s; using the torch backend", msg)
        return msg
    return _compile(src, folder, with_cuda)


def _compile(src: Path, folder: Path, with_cuda: bool) -> str | None:
    log.warning(
        "lore_kernels: compiling the native %s kernels for torch %s (once, about 1-2 min; "
        "cached in %s; LORE_JIT=0 skips)",
        "CPU+CUDA" if with_cuda else "CPU",
        torch.__version__,
        folder,
    )
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        _put_ninja_on_path()
        _buildspec.locate_cuda_home()
        from torch.utils import cpp_extension  # slow import, only when compiling

        sources = list(_buildspec.CPU_SOURCES)
        if with_cuda and cpp_extension.CUDA_HOME is not None:
            sources += _buildspec.CUDA_SOURCES
        if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = _cuda_arch() or _buildspec.DEFAULT_CUDA_ARCH
        cpp_extension.load(
            name=LIBRARY,
            sources=[str(src / s) for s in sources],
            extra_cflags=list(_buildspec.CXX_FLAGS),
            extra_ldflags=list(_buildspec.LINK_FLAGS),
            extra_cuda_cflags=list(_buildspec.NVCC_FLAGS),
            build_directory=str(folder),
            with_cuda=any(s.endswith(".cu") for s in sources),
            is_python_module=False,
            verbose=False,
        )
    except Exception as err:  # compiler missing, compile or link error, ninja missing
        (folder / "failed.log").write_text(f"{type(err).__name__}: {err}\n")
        msg = (
            f"the just-in-time build of the native kernels failed ({_first_error(err)}; "
            f"full log {folder / 'failed.log'})"
        )
        log.warning("lore_kernels: %s; using the torch backend", msg)
        return msg
    (folder / "ok").write_text(f"built in {time.monotonic() - start:.0f} s\n")
    log.info("lore_kernels: compiled in %.0f s", time.monotonic() - start)
    return None


def _first_error(err: Exception) -> str:
    """The compiler's first error line, else the exception's first line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines[1:]:
        if "error" in line.lower():
            return line[:200]
    return lines[0][:200] if lines else type(err).__name__


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the ninja wheel's binary sits beside this Python."""
    dirs = [str(Path(sys.executable).parent)]
    try:
        import ninja

        dirs.insert(0, str(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([d for d in dirs if d not in path] + path)
