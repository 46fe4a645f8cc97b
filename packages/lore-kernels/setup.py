"""Build lore-kernels with its optional native extension ``lore_kernels._C``.

    LORE_BUILD_EXT=0    build nothing native (the package runs on the torch backend,
                        or compiles the kernels on first use: see lore_kernels/_jit.py)
    LORE_BUILD_CUDA=0   build the CPU kernels only, even with a CUDA torch and toolkit

Ahead of time when torch is importable here (``--no-build-isolation``, as
scripts/setup.sh installs): the extension holds the C++/OpenMP kernels and,
when the installed torch has CUDA and a toolkit is found, the CUDA kernels.
Under pip's default build isolation torch is not importable (and must not be
a build requirement: it would pull a multi-GB CUDA torch), so the wheel is
pure Python and carries the C++/CUDA sources as ``lore_kernels/csrc``; the
kernels then compile on first use. Either way the extension is optional: a
failed compile is a warning and the package runs on the torch backend.

A ``_C`` from an earlier build (in src/ from an editable build, or in build/)
never ends up in a wheel this build did not compile it for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# setup.py commands (as pip's PEP 517 hooks run them) that produce a build.
BUILD_COMMANDS = {"build", "build_ext", "editable_wheel", "bdist_wheel", "install", "develop"}
# Those whose result imports from src/ (where an in-place _C lives).
IN_PLACE_COMMANDS = {"editable_wheel", "develop"}


def _load_buildspec():
    """lore_kernels/_buildspec.py by path: the package itself imports torch."""
    path = HERE / "src" / "lore_kernels" / "_buildspec.py"
    spec = importlib.util.spec_from_file_location("_lore_kernels_buildspec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPEC = _load_buildspec()


def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def _is_binary(path: Path) -> bool:
    return path.name.startswith("_C.") and path.suffix in (".so", ".pyd")


def _remove_inplace_binary() -> None:
    """Drop a ``_C`` left in the source tree by an earlier (editable) build.

    An editable install imports from src/, so a stale binary there would be
    loaded although this build made none, or a failed one. Only for builds
    that import from src/: a wheel build leaves the working copy alone.
    """
    args = sys.argv[1:]
    if not (IN_PLACE_COMMANDS.intersection(args) or "--inplace" in args or "-i" in args):
        return
    for stale in (HERE / "src" / "lore_kernels").glob("_C.*"):
        if _is_binary(stale):
            stale.unlink()


class BuildPy(build_py):
    """Copy the package without any old ``_C``, plus the C++/CUDA sources.

    build_py runs before build_ext, so whatever ``_C`` lies in the build folder
    afterwards is this build's or none.
    """

    def run(self) -> None:
        super().run()
        package = Path(self.build_lib) / "lore_kernels"
        for stale in package.glob("_C.*"):
            if _is_binary(stale):
                stale.unlink()
        if getattr(self, "editable_mode", False):
            return  # an editable install compiles from the source tree's csrc/
        target = package / "csrc"
        shutil.rmtree(target, ignore_errors=True)
        for source in sorted((HERE / "csrc").rglob("*")):
            if source.is_file() and source.suffix in SPEC.SOURCE_SUFFIXES:
                dest = target / source.relative_to(HERE / "csrc")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        target = Path(self.build_lib) / "lore_kernels" / "csrc"
        sources = (HERE / "csrc").rglob("*")
        return outputs + [
            str(target / s.relative_to(HERE / "csrc"))
            for s in sources
            if s.is_file() and s.suffix in SPEC.SOURCE_SUFFIXES
        ]


def _extensions() -> tuple[list, dict]:
    building = bool(BUILD_COMMANDS.intersection(sys.argv[1:]))  # not for metadata queries
    if not _flag("LORE_BUILD_EXT"):
        print("lore-kernels: LORE_BUILD_EXT=0, building no native extension", file=sys.stderr)
        if building:
            _remove_inplace_binary()
        return [], {}
    if importlib.util.find_spec("torch") is None:
        if building:
            print(
                "lore-kernels: torch is not importable in this build environment (pip's build "
                "isolation): installing the Python package and the C++/CUDA sources; the native "
                "kernels compile on first use (LORE_JIT=0 skips), or build them now with "
                "--no-build-isolation",
                file=sys.stderr,
            )
            _remove_inplace_binary()
        return [], {}
    SPEC.locate_cuda_home()
    import torch
    from torch.utils import cpp_extension as ext

    cpu_sources = [f"csrc/{s}" for s in SPEC.CPU_SOURCES]
    cxx = list(SPEC.CXX_FLAGS)
    link = list(SPEC.LINK_FLAGS)
    with_cuda = (
        _flag("LORE_BUILD_CUDA") and torch.version.cuda is not None and ext.CUDA_HOME is not None
    )
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = SPEC.DEFAULT_CUDA_ARCH
        module = ext.CUDAExtension(
            "lore_kernels._C",
            [*cpu_sources, *(f"csrc/{s}" for s in SPEC.CUDA_SOURCES)],
            extra_compile_args={"cxx": cxx, "nvcc": list(SPEC.NVCC_FLAGS)},
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
        (the editable wheel, the in-place copy) expects their binaries, and
        their half-written or old binaries are deleted.
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
            Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            print(
                f"lore-kernels: WARNING: building {extension.name} failed ({err}); "
                "installing without it, lore_kernels will compile it on first use "
                "or use the torch backend",
                file=sys.stderr,
            )

    return OptionalBuildExtension.with_options(use_ninja=True)


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPy, **cmdclass})
