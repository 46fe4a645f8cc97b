"""Build lore-kernels with its optional native extension ``lore_kernels._C``.

    LORE_BUILD_EXT=0    build nothing native (the package runs on the torch backend)
    LORE_BUILD_CUDA=0   build the CPU kernels only, even with a CUDA torch and toolkit

The extension holds the C++/OpenMP kernels and, when the installed torch has
CUDA and a toolkit is found, the CUDA kernels. It is optional: if it fails to
compile, the install still succeeds and ``import lore_kernels`` logs one line
and uses the torch backend (as torchao does). Build with --no-build-isolation
against the installed torch (see pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
# setup.py commands (as pip's PEP 517 hooks run them) that produce a build.
BUILD_COMMANDS = {"build", "build_ext", "editable_wheel", "bdist_wheel", "install", "develop"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def _locate_cuda_home() -> None:
    """Point torch at a real toolkit before it guesses from ``which nvcc``.

    An ``nvcc`` wrapper script in /usr/local/bin makes torch guess
    CUDA_HOME=/usr/local, which has no CUDA headers; take the first candidate
    that has them.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "include" / "cuda_runtime.h").is_file() and (home / "bin" / "nvcc").exists():
            os.environ["CUDA_HOME"] = str(home)
            return


def _remove_inplace_binary() -> None:
    """Drop a ``_C`` left in the source tree by an earlier (editable) build.

    An editable install imports from src/, so a stale binary there would be
    loaded although this build made none, or a failed one.
    """
    for stale in (HERE / "src" / "lore_kernels").glob("_C.*"):
        if stale.suffix in (".so", ".pyd"):
            stale.unlink()


def _extensions() -> tuple[list, dict]:
    if not _flag("LORE_BUILD_EXT"):
        print("lore-kernels: LORE_BUILD_EXT=0, building no native extension", file=sys.stderr)
        if BUILD_COMMANDS.intersection(sys.argv[1:]):  # not for metadata queries
            _remove_inplace_binary()
        return [], {}
    _locate_cuda_home()
    import torch
    from torch.utils import cpp_extension as ext

    cpu_sources = ["csrc/lowrank_bt.cpp", "csrc/cpu/lowrank_bt_cpu.cpp"]
    # -O3 and no -march: the binary must run on any x86-64; the kernels pick
    # AVX-512/AVX2 at run time (csrc/cpu/lowrank_bt_cpu.cpp). -fopenmp in both
    # compile and link flags, or the kernels silently run on one thread.
    # -ffp-contract=fast lets the vector loops use FMA under every compiler dialect.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=fast"]  # the C++ standard: whatever torch asks for
    link = ["-fopenmp"]
    with_cuda = (
        _flag("LORE_BUILD_CUDA") and torch.version.cuda is not None and ext.CUDA_HOME is not None
    )
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # No GPU to detect: build for Hopper (H100/H200), the machines we run on.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
        module = ext.CUDAExtension(
            "lore_kernels._C",
            [*cpu_sources, "csrc/cuda/lowrank_bt.cu", "csrc/cuda/lowrank_bt_cuda.cpp"],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link,
        )
    else:
        module = ext.CppExtension(
            "lore_kernels._C", cpu_sources, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    print(
        f"lore-kernels: building lore_kernels._C ({'CPU+CUDA' if with_cuda else 'CPU'})",
        file=sys.stderr,
    )
    return [module], {"build_ext": _optional_build_ext(ext.BuildExtension)}


def _optional_build_ext(base):
    class OptionalBuildExtension(base):
        """Turn a failed native build into a warning: the torch backend still works.

        Failed extensions are dropped from the command's list, so nothing later
        (the editable wheel, the in-place copy) expects their binaries.
        """

        def build_extensions(self):
            self._failed = set()
            try:
                super().build_extensions()
            except Exception as err:  # raised before any extension, e.g. compiler checks
                for extension in self.extensions:
                    self._give_up(extension, err)
            self.extensions = [e for e in self.extensions if e.name not in self._failed]

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as err:  # compile or link error
                self._give_up(extension, err)

        def _give_up(self, extension, err):
            if extension.name in self._failed:
                return
            self._failed.add(extension.name)
            _remove_inplace_binary()
            print(
                f"lore-kernels: WARNING: building {extension.name} failed ({err}); "
                "installing without it, lore_kernels will use the torch backend",
                file=sys.stderr,
            )

    return OptionalBuildExtension.with_options(use_ninja=True)


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
