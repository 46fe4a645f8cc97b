"""The CUDA kernels' code, run on the CPU by the fiber emulator in cuda_emulator/.

csrc/cuda/lowrank_bt.cu is compiled with g++ against a stand-in cuda_runtime.h
that runs each block's 256 threads as cooperative fibers, and its real plan
and launch functions are called on host tensors. This checks the kernels'
logic (tiling, the warp reduce-scatter, per-block partials, dS runs, the
deterministic path, shared-memory and in-place reads of Z) on machines without
a GPU; test_lowrank_bt.py checks the real thing on a GPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from lore_kernels.reference import lowrank_bt_reference

from .test_lowrank_bt import assert_outputs_close, make_case, math_in

EMULATOR = Path(__file__).with_name("cuda_emulator")
KERNEL_SOURCE = Path(__file__).parents[1] / "csrc" / "cuda" / "lowrank_bt.cu"
ZTYPE = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
OPTIN_H100 = 227 * 1024


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if not KERNEL_SOURCE.exists():
        pytest.skip(f"kernel source {KERNEL_SOURCE} not available")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA emulator")
    lib_path = tmp_path_factory.mktemp("cuda_emulator") / "emulate.so"
    cmd = [cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-DLORE_CUDA_EMULATION",
           "-I", str(EMULATOR), "-Wall", "-Wno-unknown-pragmas", "-Werror",
           "-o", str(lib_path), str(EMULATOR / "emulate.cpp")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(lib_path))
    lib.emu_configure.argtypes = [ctypes.c_int] * 3
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.emu_lowrank_bt.argtypes = [ctypes.c_int, ptr, i64, ctypes.c_int, ptr, ptr, ptr, ptr,
                                   i64, i64, i64, i64, ctypes.c_double, ctypes.c_int,
                                   ptr, ptr, ptr, ptr, ptr, ptr]  # fmt: skip
    lib.emu_project.argtypes = [ctypes.c_int, ptr, i64, ctypes.c_int, ptr, i64, i64, i64, ptr]
    return lib


def run_bt(lib, case, *, deterministic, sms=2, optin=OPTIN_H100, blocks_per_sm=2, tau=0.01):
    """The registration's job, by hand: transpose V, call plan + launch, reduce gp by user."""
    lib.emu_configure(sms, optin, blocks_per_sm)
    Z, user, weight, V, S = case.Z, case.user, case.weight, case.V, case.S
    acc = V.dtype
    M, d = Z.shape
    K, N = V.shape[1], S.shape[0]
    vt = V.T.contiguous()
    loss = torch.empty((), dtype=acc)
    margin = torch.empty(M, dtype=acc)
    dV = torch.empty(d, K, dtype=acc)
    dS = torch.full((N, K), float("nan"), dtype=acc)
    gp = torch.full((max(M, 1), K), float("nan"), dtype=acc)
    info = (ctypes.c_int * 2)()
    rc = lib.emu_lowrank_bt(
        int(acc == torch.float64), Z.data_ptr(), Z.stride(0) if M > 1 else d, ZTYPE[Z.dtype],
        user.data_ptr(), weight.data_ptr(), vt.data_ptr(), S.data_ptr(), M, d, K, N, tau,
        int(deterministic), loss.data_ptr(), margin.data_ptr(), dV.data_ptr(), dS.data_ptr(),
        gp.data_ptr(), info,
    )  # fmt: skip
    assert rc == 0, f"cudaError {rc}"
    if deterministic:
        dS = torch.zeros(N, K, dtype=acc).index_add_(0, user, gp[:M])
    return (loss, margin, dV, dS), {"blocks": info[0], "cached": bool(info[1])}


ONE_BLOCK = {"sms": 1, "blocks_per_sm": 1}
CASES = [
    # M, d, K, N, dtype, users, deterministic, emulator settings
    pytest.param(40, 24, 4, 5, torch.float32, "sorted", False, {}, id="fp32-4-blocks"),
    pytest.param(37, 33, 9, 6, torch.bfloat16, "shuffled", True, {}, id="bf16-odd-d-K9-det"),
    pytest.param(29, 64, 1, 3, torch.float16, "one-pair", False, {}, id="fp16-vec16-K1"),
    pytest.param(21, 40, 64, 4, torch.float32, "gaps", True, {"optin": 7000}, id="K64-Z-in-place"),
    pytest.param(45, 16, 3, 7, torch.float32, "sorted", False, ONE_BLOCK, id="one-block-tiles"),
    pytest.param(0, 8, 2, 3, torch.float32, "sorted", False, {}, id="M0"),
]


@pytest.mark.parametrize(("M", "d", "K", "N", "dtype", "users", "det", "settings"), CASES)
def test_emulated_kernel_matches_reference(emu, M, d, K, N, dtype, users, det, settings):
    case = make_case(M, d, K, N, dtype=dtype, users=users)
    out, plan = run_bt(emu, case, deterministic=det, **settings)
    if "optin" in settings:
        assert not plan["cached"]
    else:
        assert plan["cached"]
    tiles = -(-M // 8)
    assert plan["blocks"] == max(
        1, min(settings.get("sms", 2) * settings.get("blocks_per_sm", 2), tiles)
    )
    if dtype == torch.float32:
        assert_outputs_close(out, lowrank_bt_reference(*case.args()), rtol=2e-5)
    else:
        truth, torch_low = math_in(torch.float64, *case.args()), math_in(dtype, *case.args())
        for a, t, b in zip(out, truth, torch_low, strict=True):
            assert (a.double() - t).abs().max() <= 2 * (b.double() - t).abs().max() + 1e-12


def test_emulated_kernel_fp64(emu):
    case = make_case(23, 7, 3, 4, dtype=torch.float64, users="shuffled")
    out, _ = run_bt(emu, case, deterministic=False, tau=0.5)
    assert_outputs_close(out, math_in(torch.float64, *case.args(0.5)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_emulated_project(emu, dtype):
    case = make_case(19, 35, 10, 3, dtype=dtype)
    emu.emu_configure(2, OPTIN_H100, 2)
    P = torch.full((19, 10), float("nan"), dtype=case.V.dtype)
    vt = case.V.T.contiguous()
    rc = emu.emu_project(int(dtype == torch.float64), case.Z.data_ptr(), case.Z.stride(0),
                         ZTYPE[dtype], vt.data_ptr(), 19, 35, 10, P.data_ptr())  # fmt: skip
    assert rc == 0
    ref = case.Z.double() @ case.V.double()
    torch.testing.assert_close(P.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
