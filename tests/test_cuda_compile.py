"""CI compile check of the CUDA kernels: every .cu builds warning-free for sm_90.

The .cu files include no torch header, so nvcc alone can compile them, in
seconds, on any machine with the toolkit (no GPU, no CUDA torch needed).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_DIR = Path(__file__).resolve().parents[1] / "packages" / "lore-kernels" / "csrc" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")


def test_cuda_sources_exist():
    assert SOURCES, f"no .cu files under {CUDA_DIR}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cu_compiles_for_sm90_without_warnings(source, tmp_path):
    cmd = [
        NVCC, "-c", "-std=c++17", "-gencode=arch=compute_90,code=sm_90",
        "-Werror", "all-warnings", "-o", str(tmp_path / f"{source.stem}.o"), str(source),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "warning" not in output.lower(), output
