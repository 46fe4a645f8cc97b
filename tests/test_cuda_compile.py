"""CI compile check of the CUDA kernels: every .cu builds warning-free for sm_80 and sm_90.

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


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cu_compiles_for_sm80_and_sm90_without_warnings(source, tmp_path):
    """A100 and H100/H200 in one nvcc call (--threads 2: the two in parallel)."""
    cmd = [
        NVCC, "-c", "-std=c++17", "-O3", "--threads", "2",
        "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
        "-Werror", "all-warnings",
        "-o", str(tmp_path / f"{source.stem}.o"), str(source),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "warning" not in output.lower(), output


def _torch_include_flags() -> list[str] | None:
    try:
        from torch.utils import cpp_extension
    except ImportError:
        return None
    return [f"-I{p}" for p in cpp_extension.include_paths()]


CUDA_INCLUDE = next(
    (p for p in (Path("/usr/local/cuda/include"),) if (p / "cuda_runtime.h").is_file()), None
)
REGISTRATIONS = sorted(CUDA_DIR.glob("*.cpp"))


@pytest.mark.skipif(CUDA_INCLUDE is None, reason="no CUDA headers in /usr/local/cuda/include")
@pytest.mark.parametrize("source", REGISTRATIONS, ids=lambda p: p.name)
def test_cuda_registration_parses(source, tmp_path):
    """The torch side of the CUDA kernels (a .cpp, built only with a CUDA torch) at
    least parses against this torch's headers: a typo there would otherwise first
    show on a GPU machine. CPU torch wheels lack one generated CUDA header; an
    empty stand-in takes its place."""
    flags = _torch_include_flags()
    if flags is None:
        pytest.skip("torch not importable")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = [cxx, "-std=c++20", "-fsyntax-only", *flags, f"-I{tmp_path}", f"-I{CUDA_INCLUDE}",
           str(source)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
