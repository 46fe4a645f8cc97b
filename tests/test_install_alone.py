"""Each package installs alone from a clone, as a user would, under pip's defaults.

For each package: a fresh venv, ``pip install packages/<name>`` (with the
sibling packages it depends on on the same command line) under pip's default
build isolation, then its command or an import. torch is not downloaded
again: the venv sees this interpreter's torch (and only the packages torch
itself needs) through a ``.pth`` file, which is what ``--system-site-packages``
would give if torch lived in the base interpreter (on a fresh machine it lives
only in scripts/setup.sh's .venv). The other dependencies come from the
package index (pip's cache after the first run). Also: the kernels compile on
first use in such a venv, and no old ``_C`` reaches a wheel.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"
# name -> (the venv it is added to, or None for a fresh one; what one
# `pip install` gets: the package and the siblings it depends on, as in the
# README). lore-eval is added to lore-train's venv (a minute less on a small
# machine); its one sibling dependency, lore-train, is then the installed one.
INSTALLS: dict[str, tuple[str | None, list[str]]] = {
    "lore-kernels": (None, ["lore-kernels"]),
    "lore-datasets": (None, ["lore-datasets"]),
    "lore-train": (None, ["lore-train", "lore-kernels", "lore-datasets"]),
    "lore-eval": ("lore-train", ["lore-eval"]),
}


def _closure(name: str) -> list[metadata.Distribution]:
    """The installed distribution ``name`` and everything it requires (markers evaluated)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


@pytest.fixture(scope="module")
def torch_overlay(tmp_path_factory) -> Path:
    """A folder of links to torch and what torch needs, and nothing else of this venv."""
    overlay = tmp_path_factory.mktemp("torch-overlay")
    for dist in _closure("torch"):
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or (overlay / top).exists():
                continue
            if (base / top).exists():
                (overlay / top).symlink_to(base / top)
    return overlay


def _env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment a user's shell would have with ``venv`` activated, nothing of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_NO_BUILD_ISOLATION", "PYTHON", "VIRTUAL_ENV", "LORE_"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        LORE_JIT="0",
    )
    env.update(extra)
    return env


def _run(cmd: list[str], venv: Path, cwd: Path, timeout: int = 600, **env: str):
    proc = subprocess.run(
        cmd, cwd=cwd, env=_env(venv, **env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _fresh_venv(folder: Path, torch_overlay: Path) -> Path:
    """A new venv (with pip) that sees the torch overlay."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "_lore_test_torch.pth").write_text(f"{torch_overlay}\n")
    return venv


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The packages as a fresh clone has them: a pip build writes build/ and *.egg-info
    into the tree it builds, which must be neither this checkout nor an earlier build's."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(PACKAGES, root / "packages", ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "_C.*"))
    return root


@pytest.fixture(scope="module")
def venvs(tmp_path_factory, torch_overlay, clone):
    """name -> a venv where ``INSTALLS[name]`` was installed by a plain ``pip install``."""
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name in made:
            return made[name]
        base, packages = INSTALLS[name]
        venv = make(base) if base else _fresh_venv(tmp_path_factory.mktemp(name), torch_overlay)
        python = str(venv / "bin" / "python")
        paths = [f"packages/{package}" for package in packages]
        proc = _run([python, "-m", "pip", "install", *paths], venv, cwd=clone)
        assert "Downloading torch" not in proc.stdout
        made[name] = venv
        return venv

    return make


def _python(venv: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    return _run([str(venv / "bin" / "python"), "-c", code], venv, cwd=venv, **env)


@pytest.mark.parametrize(
    "name,command",
    [
        ("lore-datasets", ["lore-prepare", "--help"]),
        ("lore-train", ["lore-train", "--help"]),
        ("lore-eval", ["lore-eval", "--help"]),
    ],
)
def test_a_package_and_its_command_install_alone(venvs, name, command):
    venv = venvs(name)
    proc = _run([str(venv / "bin" / command[0]), *command[1:]], venv, cwd=venv)
    assert proc.stdout.startswith("usage:"), proc.stdout[:200]
    # The packages run from the venv (not from the clone) and use the shared torch.
    module = name.replace("-", "_")
    where = _python(venv, f"import torch, {module}; print({module}.__file__, torch.__file__)")
    package_file, torch_file = where.stdout.split()
    assert package_file.startswith(str(venv)), package_file
    assert not torch_file.startswith(str(venv)), "torch was installed again"


def test_lore_kernels_installs_alone_with_its_sources(venvs):
    venv = venvs("lore-kernels")
    code = (
        "import lore_kernels, lore_kernels._jit as jit;"
        "print(lore_kernels.backend('cpu'), jit.source_dir())"
    )
    backend, src = _python(venv, code).stdout.split()
    assert backend == "torch"  # LORE_JIT=0 and nothing built at install
    assert src.startswith(str(venv)) and Path(src, "cpu", "lowrank_bt_cpu.cpp").is_file()
    assert not list(Path(src).parent.glob("_C.*"))


def test_kernels_compile_on_first_use(venvs, tmp_path):
    """The real just-in-time build (about a minute on 2 cores), then the cached load."""
    venv = venvs("lore-kernels")
    code = (
        "import logging, time, torch, lore_kernels;"
        "from lore_kernels.reference import lowrank_bt_reference;"
        "logging.basicConfig(level=logging.INFO, format='%(message)s');"
        "g = torch.Generator().manual_seed(0);"
        "Z = torch.randn(300, 16, generator=g);"
        "user = torch.randint(0, 7, (300,), generator=g).sort().values;"
        "args = (Z, user, torch.full((300,), 1 / 300), torch.randn(16, 3, generator=g),"
        " torch.rand(7, 3, generator=g), 0.5);"
        "start = time.monotonic(); assert lore_kernels.backend('cpu') == 'cpu';"
        "print(f'{time.monotonic() - start:.2f}');"
        "[torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5) for a, b in"
        " zip(lore_kernels.lowrank_bt(*args), lowrank_bt_reference(*args), strict=True)]"
    )
    cache = tmp_path / "kernels-cache"
    # the CPU kernels only: with a CUDA torch on a GPU machine nvcc would take minutes more
    jit = {"LORE_JIT": "1", "LORE_KERNELS_CACHE": str(cache), "LORE_BUILD_CUDA": "0"}
    first = _python(venv, code, **jit)
    compiling = [ln for ln in first.stderr.splitlines() if "compiling the native" in ln]
    assert len(compiling) == 1 and str(cache) in compiling[0], first.stderr
    assert len(list(cache.glob("*/lore_kernels_jit.so"))) == 1

    again = _python(venv, code, **jit)
    assert "compiling" not in again.stderr
    assert float(again.stdout.split()[-1]) < 5.0  # a load, not a build


def _wheel_members(tree: Path, venv: Path, *pip_args: str) -> list[str]:
    out = tree.parent / "wheels"
    python = str(venv / "bin" / "python")
    _run(
        [python, "-m", "pip", "wheel", "--no-deps", "-w", str(out), *pip_args, str(tree)],
        venv,
        cwd=tree,
    )
    (wheel,) = out.glob("lore_kernels-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _copy_with_stale_extension(tmp_path: Path) -> tuple[Path, list[str]]:
    """packages/lore-kernels copied, with an old ``_C`` in src/ and in the build folders."""
    tree = tmp_path / "lore-kernels"
    subprocess.run(["cp", "-r", str(PACKAGES / "lore-kernels"), str(tree)], check=True, timeout=60)
    for leftover in ("build", "src/lore_kernels.egg-info"):
        subprocess.run(["rm", "-rf", str(tree / leftover)], check=True)
    platform_lib = f"build/lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
    stale = [
        "src/lore_kernels/_C.abi3.so",
        "build/lib/lore_kernels/_C.abi3.so",
        f"{platform_lib}/lore_kernels/_C.abi3.so",
    ]
    for path in stale:
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(b"an old build")
    return tree, stale


def test_no_old_extension_ships_in_a_wheel(venvs, tmp_path):
    """A _C from an earlier build (in src/ or build/) stays out of a wheel built without one."""
    tree, stale = _copy_with_stale_extension(tmp_path)
    members = _wheel_members(tree, venvs("lore-kernels"))
    assert not [m for m in members if "/_C." in m], members
    assert "lore_kernels/csrc/lowrank_bt.cpp" in members
    assert (tree / stale[0]).is_file()  # a wheel build leaves the working copy alone


def test_no_old_extension_ships_after_a_failed_build(tmp_path):
    """With torch importable the extension is compiled; when that fails, no old _C ships."""
    tree, _ = _copy_with_stale_extension(tmp_path)
    for source in ("csrc/lowrank_bt.cpp", "csrc/cpu/lowrank_bt_cpu.cpp"):
        (tree / source).write_text("#error deliberately broken\n")
    out = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
    proc = subprocess.run(
        [*cmd, "-w", str(out), str(tree)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "building lore_kernels._C failed" in proc.stdout + proc.stderr
    (wheel,) = out.glob("lore_kernels-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = archive.namelist()
    assert not [m for m in members if "/_C." in m], members
