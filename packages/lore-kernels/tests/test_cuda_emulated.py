"""The CUDA kernels' code, run on the CPU by the fiber emulator in cuda_emulator/.

csrc/cuda/lowrank_bt.cu is compiled with g++ against a stand-in cuda_runtime.h
that runs each block's 256 threads as cooperative fibers, and its real plan
and launch functions are called on host tensors. This checks the kernels'
logic (runs of users cut by block edges and their edge slots, the fixed-order
reductions, 16-byte and scalar reads of Z, the projection's tiles and warp
reduce-scatter) on machines without a GPU; test_lowrank_bt.py checks the
real thing on a GPU.
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
    lib.emu_rows.argtypes = [ctypes.c_int, ptr, i64, ctypes.c_int, ptr, ptr, ptr, i64, i64,
                             ctypes.c_double, ctypes.c_double, ctypes.c_int, ptr, ptr, ptr,
                             ptr]  # fmt: skip
    lib.emu_project.argtypes = [ctypes.c_int, ptr, i64, ctypes.c_int, ptr, i64, i64, i64, ptr]
    return lib


def run_bt(lib, case, *, grad=True, sms=2, optin=OPTIN_H100, blocks_per_sm=2, tau=0.01,
           label_noise=0.0):
    """The registration's job, by hand: sort rows by user, H = S V^T, the row pass,
    dV = G^T S and dS = G V, margins back in the caller's order."""
    lib.emu_configure(sms, optin, blocks_per_sm)
    Z, user, weight, V, S = case.Z, case.user, case.weight, case.V, case.S
    acc = V.dtype
    M, d = Z.shape
    N = S.shape[0]
    perm = torch.sort(user, stable=True).indices
    Zs, us, ws = Z[perm].contiguous(), user[perm].contiguous(), weight[perm].contiguous()
    H = (S @ V.T).contiguous()
    margin = torch.full((M,), float("nan"), dtype=acc)
    G = torch.zeros(N, d, dtype=acc)
    loss = torch.full((), float("nan"), dtype=acc)
    info = (ctypes.c_int * 1)()
    rc = lib.emu_rows(
        int(acc == torch.float64), Zs.data_ptr(), Zs.stride(0) if M > 1 else d, ZTYPE[Z.dtype],
        us.data_ptr(), ws.data_ptr(), H.data_ptr(), M, d, tau, label_noise, int(grad),
        margin.data_ptr(),
        G.data_ptr(), loss.data_ptr(), info,
    )  # fmt: skip
    assert rc == 0, f"cudaError {rc}"
    margin = torch.empty_like(margin).index_copy_(0, perm, margin)
    if not grad:
        return margin, {"blocks": info[0]}
    if M == 0:
        loss = torch.zeros((), dtype=acc)
    return (loss, margin, G.T @ S, G @ V), {"blocks": info[0]}


ONE_BLOCK = {"sms": 1, "blocks_per_sm": 1}
CASES = [
    # M, d, K, N, dtype, users, emulator settings
    pytest.param(200, 24, 4, 5, torch.float32, "sorted", {}, id="fp32-users-cut-by-blocks"),
    pytest.param(137, 33, 9, 6, torch.bfloat16, "shuffled", {}, id="bf16-odd-d-K9-shuffled"),
    pytest.param(129, 64, 1, 3, torch.float16, "one-pair", {}, id="fp16-vec16-K1"),
    pytest.param(150, 40, 64, 150, torch.float32, "each-one", {}, id="K64-one-pair-users"),
    pytest.param(300, 48, 3, 1, torch.bfloat16, "one", {}, id="one-user-every-block"),
    pytest.param(45, 16, 3, 7, torch.float32, "sorted", ONE_BLOCK, id="one-block"),
    pytest.param(220, 40, 5, 30, torch.float32, "gaps", {}, id="users-without-rows"),
    pytest.param(0, 8, 2, 3, torch.float32, "sorted", {}, id="M0"),
]


def assert_within_dtype(out, case, dtype):
    if dtype == torch.float32:
        assert_outputs_close(out, lowrank_bt_reference(*case.args()), rtol=2e-5)
    else:
        truth, torch_low = math_in(torch.float64, *case.args()), math_in(dtype, *case.args())
        for a, t, b in zip(out, truth, torch_low, strict=True):
            assert (a.double() - t).abs().max() <= 2 * (b.double() - t).abs().max() + 1e-12


@pytest.mark.parametrize(("M", "d", "K", "N", "dtype", "users", "settings"), CASES)
def test_emulated_kernel_matches_reference(emu, M, d, K, N, dtype, users, settings):
    case = make_case(M, d, K, N, dtype=dtype, users=users)
    out, plan = run_bt(emu, case, **settings)
    most = settings.get("sms", 2) * settings.get("blocks_per_sm", 2)
    assert plan["blocks"] == max(1, min(most, -(-M // 32)))
    assert_within_dtype(out, case, dtype)
    margin, _ = run_bt(emu, case, grad=False, **settings)
    assert torch.equal(margin, out[1]), "margin-only pass differs from the fused one"


def test_emulated_kernel_is_deterministic(emu):
    case = make_case(400, 40, 6, 7, dtype=torch.bfloat16, users="sorted")
    first, _ = run_bt(emu, case)
    second, _ = run_bt(emu, case)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_kernel_label_noise(emu, dtype):
    """The noisy likelihood's row terms on the GPU path (shared with the CPU kernel)."""
    case = make_case(200, 24, 4, 5, dtype=dtype, users="shuffled")
    out, _ = run_bt(emu, case, tau=0.5, label_noise=0.1)
    ref = lowrank_bt_reference(*case.args(0.5), 0.1, dtype=torch.float64)
    assert_outputs_close(out, ref, rtol=2e-5 if dtype == torch.float32 else 1e-12)


def test_emulated_kernel_fp64(emu):
    case = make_case(23, 7, 3, 4, dtype=torch.float64, users="shuffled")
    out, _ = run_bt(emu, case, tau=0.5)
    assert_outputs_close(out, math_in(torch.float64, *case.args(0.5)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("optin", [OPTIN_H100, 5000], ids=["tile-in-smem", "Z-in-place"])
def test_emulated_project(emu, dtype, optin):
    case = make_case(19, 35, 10, 3, dtype=dtype)
    emu.emu_configure(2, optin, 2)
    P = torch.full((19, 10), float("nan"), dtype=case.V.dtype)
    vt = case.V.T.contiguous()
    rc = emu.emu_project(int(dtype == torch.float64), case.Z.data_ptr(), case.Z.stride(0),
                         ZTYPE[dtype], vt.data_ptr(), 19, 35, 10, P.data_ptr())  # fmt: skip
    assert rc == 0
    ref = case.Z.double() @ case.V.double()
    torch.testing.assert_close(P.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
