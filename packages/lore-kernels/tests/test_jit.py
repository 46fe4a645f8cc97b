"""The just-in-time build: its cache key, the LORE_JIT switch and a failed compile.

These run in seconds (nothing real is compiled). The real compile, in a fresh
venv that installed the package under pip's build isolation, is
tests/test_install_alone.py::test_kernels_compile_on_first_use (slow).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lore_kernels import _jit


def _sources(root: Path, body: str = "int x;\n") -> Path:
    for name in ("lowrank_bt.cpp", "cpu/lowrank_bt_cpu.cpp", "zview.h"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def test_the_cache_key_follows_every_source_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LORE_KERNELS_CACHE", str(tmp_path / "cache"))
    src = _sources(tmp_path / "csrc")
    first = _jit.build_dir(src, with_cuda=False)
    assert first == _jit.build_dir(src, with_cuda=False)
    assert first.parent == tmp_path / "cache"
    assert first.name.startswith("torch") and "-cpu-" in first.name
    (src / "zview.h").write_text("int y;\n")  # a header: compiles differently
    assert _jit.build_dir(src, with_cuda=False) != first


def test_the_cache_lives_under_the_home_cache_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("LORE_KERNELS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _jit.cache_root() == tmp_path / "lore_kernels"


def test_the_sources_are_found_in_the_source_tree():
    src = _jit.source_dir()
    assert src is not None and (src / "cpu" / "lowrank_bt_cpu.cpp").is_file()


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_switch(monkeypatch, value, on):
    monkeypatch.setenv("LORE_JIT", value)
    assert _jit.enabled() is on


def _run_without_prebuilt(src: Path, cache: Path) -> subprocess.CompletedProcess:
    """A process that cannot import _C and compiles ``src`` instead of the real sources."""
    code = (
        "import logging, sys; from pathlib import Path;"
        "logging.basicConfig(level=logging.INFO, format='%(message)s');"
        "sys.modules['lore_kernels._C'] = None;"
        "import lore_kernels._jit as jit;"
        f"jit.source_dir = lambda: Path({str(src)!r});"
        "import torch, lore_kernels;"
        "assert lore_kernels.backend('cpu') == 'torch', lore_kernels.backend('cpu');"
        "Z = torch.randn(9, 4); V = torch.randn(4, 2);"
        "assert torch.equal(lore_kernels.project(Z, V), Z @ V)"
    )
    env = {k: v for k, v in os.environ.items() if k != "LORE_BACKEND"}
    env.update(LORE_JIT="1", LORE_KERNELS_CACHE=str(cache))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_a_failed_compile_is_one_warning_and_the_torch_backend(tmp_path):
    src = _sources(tmp_path / "csrc", "#error deliberately broken\n")
    first = _run_without_prebuilt(src, tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    lines = [ln for ln in first.stderr.splitlines() if "lore_kernels:" in ln]
    assert sum("compiling the native" in ln for ln in lines) == 1, first.stderr
    failed = [ln for ln in lines if "failed (" in ln and "torch backend" in ln]
    assert len(failed) == 1, first.stderr
    logs = list((tmp_path / "cache").glob("*/failed.log"))
    assert len(logs) == 1 and "deliberately broken" in logs[0].read_text()
    assert not list((tmp_path / "cache").glob("*/*.so"))

    again = _run_without_prebuilt(src, tmp_path / "cache")  # the failure is remembered
    assert again.returncode == 0, again.stderr
    assert "compiling the native" not in again.stderr
    assert "earlier just-in-time build failed" in again.stderr


def test_jit_off_compiles_nothing(tmp_path):
    code = (
        "import sys; sys.modules['lore_kernels._C'] = None;"
        "import lore_kernels; assert lore_kernels.backend('cpu') == 'torch'"
    )
    env = dict(os.environ, LORE_JIT="0", LORE_KERNELS_CACHE=str(tmp_path / "cache"))
    env.pop("LORE_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "compiling" not in proc.stderr
    assert not (tmp_path / "cache").exists()
