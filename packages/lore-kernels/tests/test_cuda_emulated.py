"""The CUDA kernels' code, run on the CPU by the fiber emulator in cuda_emulator/.

csrc/cuda/lowrank_bt.cu is compiled with g++ against a stand-in cuda_runtime.h
that runs each block's 256 threads as cooperative fibers (warps shuffle
independently), and its real plan and launch functions are called on host
tensors, after the registration's own row index (csrc/cuda/lowrank_bt_index.h:
range check, sortedness, the permutation, compact user ids). This checks the
kernels' logic (workers of a warp or a block, runs cut by worker edges and
their merged edge slots, the fixed-order reductions, 16-byte and element-wise
reads of Z, rows over 4 KB, misaligned Z, the projection) on machines without
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

from .test_lowrank_bt import Case, assert_outputs_close, make_case, math_in

EMULATOR = Path(__file__).with_name("cuda_emulator")
KERNEL_SOURCE = Path(__file__).parents[1] / "csrc" / "cuda" / "lowrank_bt.cu"
ZTYPE = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
OPTIN_H100 = 227 * 1024
INFO = ("blocks", "workers", "warp_tiles", "items", "tile_rows", "workspace_bytes")


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
    i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    lib.emu_configure.argtypes = [i32] * 3
    lib.emu_row_index.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr]
    lib.emu_extra_bytes.argtypes = [i64, i64, i64, i64, i32, i64, i64]
    lib.emu_extra_bytes.restype = i64
    lib.emu_plan.argtypes = [i32, i32, i64, i64, i32, ptr]
    lib.emu_rows.argtypes = [i32, ptr, i64, i32, ptr, ptr, i64, ptr, ptr, i64, i64,
                             ctypes.c_double, ctypes.c_double, i32, ptr, ptr, ptr,
                             ptr]  # fmt: skip
    lib.emu_project.argtypes = [i32, ptr, i64, i32, ptr, i64, i64, i64, ptr]
    return lib


def row_index(lib, user: torch.Tensor, n: int) -> dict:
    """The registration's row index (lowrank_bt_index.h) of `user`."""
    m = user.numel()
    user = user.contiguous()
    perm = torch.full((max(m, 1),), -7, dtype=torch.long)
    present = torch.full((max(m, 1),), -7, dtype=torch.long)
    offsets = torch.full((m + 1,), -7, dtype=torch.long)
    out = torch.zeros(3, dtype=torch.long)
    lib.emu_row_index(user.data_ptr(), m, n, perm.data_ptr(), present.data_ptr(),
                      offsets.data_ptr(), out.data_ptr())  # fmt: skip
    bad, is_sorted, users = out.tolist()
    return {"bad_row": bad, "sorted": bool(is_sorted), "users": users,
            "perm": None if is_sorted else perm[:m], "present": present[:users],
            "offsets": offsets[: users + 1]}  # fmt: skip


def plan(lib, dtype, M, d, grad=True) -> dict:
    info = torch.zeros(len(INFO), dtype=torch.long)
    rc = lib.emu_plan(int(dtype == torch.float64), ZTYPE[dtype], M, d, int(grad), info.data_ptr())
    assert rc == 0, f"cudaError {rc}"
    return dict(zip(INFO, info.tolist(), strict=True))


def run_bt(
    lib, case, *, grad=True, sms=2, optin=OPTIN_H100, blocks_per_sm=2, tau=0.01, label_noise=0.0
):
    """The registration's job: the row index, H = S[present] V^T, the row pass
    (which reads Z and writes margins in the caller's order), dV = G^T S[present]
    and dS[present] = G V."""
    lib.emu_configure(sms, optin, blocks_per_sm)
    Z, user, weight, V, S = case.Z, case.user, case.weight, case.V, case.S
    acc = V.dtype
    M, d = Z.shape
    N = S.shape[0]
    index = row_index(lib, user, N)
    assert index["bad_row"] == -1
    present, offsets, perm = index["present"], index["offsets"], index["perm"]
    S_c = S[present]
    H = (S_c @ V.T).contiguous()
    margin = torch.full((M,), float("nan"), dtype=acc)
    G = torch.full((index["users"], d), float("nan"), dtype=acc)  # every row must be written
    loss = torch.full((), float("nan"), dtype=acc)
    info = torch.zeros(len(INFO), dtype=torch.long)
    rc = lib.emu_rows(
        int(acc == torch.float64), Z.data_ptr(), Z.stride(0) if M > 1 else d, ZTYPE[Z.dtype],
        perm.data_ptr() if perm is not None else None, offsets.data_ptr(), index["users"],
        weight.data_ptr(), H.data_ptr(), M, d, tau, label_noise, int(grad),
        margin.data_ptr(), G.data_ptr(), loss.data_ptr(), info.data_ptr(),
    )  # fmt: skip
    assert rc == 0, f"cudaError {rc}"
    plan_info = dict(zip(INFO, info.tolist(), strict=True)) if M else {}
    if not grad:
        return margin, plan_info
    if M == 0:
        loss = torch.zeros((), dtype=acc)
    dS = torch.zeros_like(S).index_copy_(0, present, G @ V)
    return (loss, margin, G.T @ S_c, dS), plan_info


ONE_BLOCK = {"sms": 1, "blocks_per_sm": 1}
MANY_BLOCKS = {"sms": 12, "blocks_per_sm": 2}
CASES = [
    # M, d, K, N, dtype, users, emulator settings
    pytest.param(200, 24, 4, 5, torch.float32, "sorted", {}, id="fp32-users-cut-by-workers"),
    pytest.param(137, 33, 9, 6, torch.bfloat16, "shuffled", {}, id="bf16-odd-d-K9-shuffled"),
    pytest.param(129, 64, 1, 3, torch.float16, "one-pair", {}, id="fp16-vec16-K1"),
    pytest.param(150, 40, 64, 150, torch.float32, "each-one", {}, id="K64-one-pair-users"),
    pytest.param(300, 48, 3, 1, torch.bfloat16, "one", {}, id="one-user-every-worker"),
    pytest.param(45, 16, 3, 7, torch.float32, "sorted", ONE_BLOCK, id="one-block"),
    pytest.param(220, 40, 5, 30, torch.float32, "gaps", {}, id="users-without-rows"),
    pytest.param(0, 8, 2, 3, torch.float32, "sorted", {}, id="M0"),
    # rows over 4 KB: the block path, more than one 16-byte chunk per thread
    pytest.param(90, 1104, 3, 4, torch.float32, "sorted", {}, id="fp32-4416B-rows-vec16"),
    pytest.param(90, 1101, 3, 4, torch.float32, "shuffled", {}, id="fp32-4404B-rows-scalar"),
    pytest.param(70, 2112, 4, 3, torch.bfloat16, "sorted", {}, id="bf16-4224B-rows-vec16"),
    pytest.param(70, 2101, 4, 3, torch.bfloat16, "one", {}, id="bf16-4202B-rows-scalar"),
    pytest.param(48, 4096, 5, 3, torch.bfloat16, "shuffled", {}, id="bf16-d4096"),
    pytest.param(40, 4096, 5, 3, torch.float32, "sorted", ONE_BLOCK, id="fp32-d4096-one-block"),
    pytest.param(120, 384, 8, 5, torch.bfloat16, "sorted", {}, id="bf16-d384-warp-workers"),
    pytest.param(120, 1030, 2, 4, torch.float16, "gaps", {}, id="fp16-d1030-block-scalar"),
    # many blocks: 24 blocks of 8 warp workers or of one block worker, users cut by
    # many worker edges
    pytest.param(6144, 24, 3, 9, torch.float32, "sorted", MANY_BLOCKS, id="192-warp-workers"),
    pytest.param(1200, 2600, 3, 2, torch.bfloat16, "one", MANY_BLOCKS, id="24-block-workers"),
]


def assert_within_dtype(out, case, dtype, tau=0.01, label_noise=0.0):
    """fp32: close to the fp32 reference; bf16/fp16: error vs fp64 within 2x torch's."""
    args = (*case.args(tau), label_noise)
    if dtype in (torch.float32, torch.float64):
        ref = lowrank_bt_reference(*args, dtype=torch.float64)
        assert_outputs_close(out, ref, rtol=2e-5 if dtype == torch.float32 else 1e-12)
    else:
        truth = lowrank_bt_reference(*args, dtype=torch.float64)
        torch_low = lowrank_bt_reference(*args, dtype=dtype)
        for a, t, b in zip(out, truth, torch_low, strict=True):
            assert (a.double() - t).abs().max() <= 2 * (b.double() - t).abs().max() + 1e-12


@pytest.mark.parametrize(("M", "d", "K", "N", "dtype", "users", "settings"), CASES)
@pytest.mark.parametrize("label_noise", [0.0, 0.1], ids=["plain", "noisy"])
def test_emulated_kernel_matches_reference(emu, M, d, K, N, dtype, users, settings, label_noise):
    case = make_case(M, d, K, N, dtype=dtype, users=users)
    tau = 0.5 if label_noise else 0.01
    out, info = run_bt(emu, case, tau=tau, label_noise=label_noise, **settings)
    if M:
        most = settings.get("sms", 2) * settings.get("blocks_per_sm", 2)
        per_block = 8 if info["warp_tiles"] else 1
        assert info["blocks"] == max(1, min(most, -(-M // (32 * per_block))))
        assert info["workers"] == info["blocks"] * per_block
    assert_within_dtype(out, case, dtype, tau, label_noise)
    margin, _ = run_bt(emu, case, grad=False, tau=tau, **settings)
    assert torch.equal(margin, out[1]), "margin-only pass differs from the fused one"


def misaligned(Z: torch.Tensor) -> torch.Tensor:
    """Z's values at storage offset 1: rows start 2 or 4 bytes past a 16-byte boundary."""
    flat = torch.empty(Z.numel() + 1, dtype=Z.dtype)
    out = flat[1:].view(Z.shape)
    out.copy_(Z)
    assert out.storage_offset() == 1
    return out


@pytest.mark.parametrize(
    ("d", "dtype"),
    [(1104, torch.float32), (2112, torch.bfloat16), (64, torch.float32), (384, torch.bfloat16)],
)
def test_emulated_kernel_misaligned_Z(emu, d, dtype):
    """Z at storage offset 1 takes the element-wise path: the same values (bitwise:
    the same sums in the same order) as the aligned 16-byte path."""
    case = make_case(70, d, 3, 4, dtype=dtype, users="shuffled", seed=2)
    aligned, _ = run_bt(emu, case)
    shifted = Case(misaligned(case.Z), case.user, case.weight, case.V, case.S)
    out, _ = run_bt(emu, shifted)
    for a, b in zip(out, aligned, strict=True):
        assert torch.equal(a, b)
    assert_within_dtype(out, case, dtype)


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


# -- the registration's row index (csrc/cuda/lowrank_bt_index.h) ----------------


def test_row_index_of_sorted_users_has_no_permutation(emu):
    user = torch.tensor([0, 0, 2, 2, 2, 5, 7, 7])
    index = row_index(emu, user, 8)
    assert index["bad_row"] == -1 and index["sorted"] and index["perm"] is None
    assert index["present"].tolist() == [0, 2, 5, 7]
    assert index["offsets"].tolist() == [0, 2, 5, 6, 8]


def test_row_index_of_unsorted_users_is_a_stable_permutation(emu):
    g = torch.Generator().manual_seed(4)
    user = torch.randint(0, 50, (500,), generator=g) * 3  # gaps: a third of ids present
    index = row_index(emu, user, 150)
    assert not index["sorted"]
    expected = torch.sort(user, stable=True).indices
    assert torch.equal(index["perm"], expected)
    present, counts = torch.unique_consecutive(user[expected], return_counts=True)
    assert torch.equal(index["present"], present)
    assert index["offsets"].tolist() == [0, *torch.cumsum(counts, 0).tolist()]


@pytest.mark.parametrize(("row", "value"), [(0, -1), (4, 7), (9, 100)])
def test_row_index_names_the_first_user_out_of_range(emu, row, value):
    user = torch.tensor([2, 1, 0, 1, 0, 2, 2, 0, 1, 1])
    user[row] = value
    user[row + 1 :] = torch.where(user[row + 1 :] == 0, 99, user[row + 1 :])  # later bad rows
    assert row_index(emu, user, 3)["bad_row"] == row


def test_row_index_of_no_rows(emu):
    index = row_index(emu, torch.zeros(0, dtype=torch.long), 3)
    assert index["users"] == 0 and index["offsets"].tolist() == [0]


def test_plan_per_path_and_extra_memory_at_a_million_users(emu):
    """The launch plan on an H100-like device (132 SMs, 2 blocks each) and the op's
    extra memory at N = 1M users, M = 1M pairs (25k users present, 40 pairs
    each), d = 4096, bf16 Z: H and G over the present users instead of all N."""
    emu.emu_configure(132, OPTIN_H100, 2)
    big = plan(emu, torch.bfloat16, 1_000_000, 4096)
    assert (big["warp_tiles"], big["items"], big["tile_rows"]) == (0, 2, 4)
    assert big["blocks"] == 264 and big["workers"] == 264
    small = plan(emu, torch.bfloat16, 65_536, 384)
    assert (small["warp_tiles"], small["items"], small["tile_rows"]) == (1, 2, 4)
    assert small["workers"] == 8 * small["blocks"] == 8 * 256
    fp32 = plan(emu, torch.float32, 1_000_000, 4096)
    assert (fp32["warp_tiles"], fp32["items"], fp32["tile_rows"]) == (0, 4, 2)
    extra = emu.emu_extra_bytes(1_000_000, 4096, 64, 25_000, 1, big["workspace_bytes"], 4)
    old = 2 * 1_000_000 * 4096 * 4  # H and G for all N users, fp32
    assert extra < 0.9e9 and old / extra > 35
    unsorted = emu.emu_extra_bytes(1_000_000, 4096, 64, 25_000, 0, big["workspace_bytes"], 4)
    assert unsorted - extra == 8_000_000  # the permutation, not a copy of Z (8 GB)


def test_d_beyond_the_register_tiles_is_refused(emu):
    emu.emu_configure(2, OPTIN_H100, 2)
    info = torch.zeros(len(INFO), dtype=torch.long)
    assert emu.emu_plan(0, ZTYPE[torch.bfloat16], 100, 8192, 1, info.data_ptr()) == 0
    assert emu.emu_plan(0, ZTYPE[torch.bfloat16], 100, 8193, 1, info.data_ptr()) != 0


@pytest.mark.parametrize(
    ("d", "pad", "dtype"),
    [(1101, 3, torch.float32), (2101, 5, torch.bfloat16), (2112, 8, torch.bfloat16),
     (384, 8, torch.bfloat16), (33, 1, torch.float16)],
    ids=["fp32-elementwise", "bf16-elementwise", "bf16-vec16", "bf16-d384-vec16", "fp16-d33"],
)  # fmt: skip
def test_emulated_kernel_reads_nothing_past_a_row(emu, d, pad, dtype):
    """Z as the first d columns of a NaN-padded wider matrix: a load past a row's
    end (a chunk or element beyond d) would bring a NaN into the sums."""
    case = make_case(90, d, 3, 4, dtype=dtype, users="shuffled", seed=7)
    wide = torch.full((90, d + pad), float("nan"), dtype=dtype)
    wide[:, :d] = case.Z
    out, _ = run_bt(emu, Case(wide[:, :d], case.user, case.weight, case.V, case.S))
    assert all(torch.isfinite(t).all() for t in out)
    assert_within_dtype(out, case, dtype)
