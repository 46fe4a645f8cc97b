"""What the native kernels are built from, shared by setup.py (ahead of time) and _jit.py.

Standard library only: setup.py reads this file by path before torch or the package is
importable, so the two builds cannot drift apart.
"""

# Relative to the csrc/ folder (in the source tree: packages/lore-kernels/csrc;
# in an installed wheel: lore_kernels/csrc).
CPU_SOURCES = ("lowrank_bt.cpp", "cpu/lowrank_bt_cpu.cpp")
CUDA_SOURCES = ("cuda/lowrank_bt.cu", "cuda/lowrank_bt_cuda.cpp")
# Every file a build reads: the sources above and the headers they include.
SOURCE_SUFFIXES = (".cpp", ".cu", ".h", ".inc")

# -O3 and no -march: the binary must run on any x86-64; the kernels pick
# AVX-512/AVX2 at run time (csrc/cpu/lowrank_bt_cpu.cpp). -fopenmp in both
# compile and link flags, or the kernels silently run on one thread.
# -ffp-contract=fast lets the vector loops use FMA under every compiler dialect.
# The C++ standard is whatever torch asks for.
CXX_FLAGS = ("-O3", "-fopenmp", "-ffp-contract=fast")
LINK_FLAGS = ("-fopenmp",)
NVCC_FLAGS = ("-O3", "-lineinfo")
# With no GPU to detect, CUDA code is built for Hopper (H100/H200).
DEFAULT_CUDA_ARCH = "9.0"


def locate_cuda_home() -> None:
    """Point torch at a real CUDA toolkit before it guesses from ``which nvcc``.

    An ``nvcc`` wrapper script in /usr/local/bin makes torch guess
    CUDA_HOME=/usr/local, which has no CUDA headers; take the first candidate
    that has them. Must run before ``torch.utils.cpp_extension`` is imported.
    """
    import os
    import shutil
    from pathlib import Path

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
