"""The fused op against the torch reference, on every native backend that is built.

Each native device ("cpu", "cuda") is a parameter; it is skipped with the
reason when its kernel is not built (or there is no GPU), so the file also
passes on a torch-only install.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import lore_kernels
from lore_kernels import _native
from lore_kernels.reference import (
    Likelihood,
    lowrank_bt_reference,
    lowrank_margin_reference,
    project_reference,
)

TAU = 0.01


def _native_params():
    cpu = pytest.param(
        "cpu",
        marks=pytest.mark.skipif(
            not _native.has_kernel("cpu"),
            reason="CPU kernel not built (bash scripts/setup.sh; LORE_BUILD_EXT unset)",
        ),
    )
    cuda = pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
            pytest.mark.skipif(not _native.has_kernel("cuda"), reason="CUDA kernel not built"),
        ],
    )
    return [cpu, cuda]


NATIVE = _native_params()
needs_cpu_kernel = pytest.mark.skipif(
    not _native.has_kernel("cpu"), reason="CPU kernel not built (bash scripts/setup.sh)"
)


@dataclass
class Case:
    Z: torch.Tensor
    user: torch.Tensor
    weight: torch.Tensor
    V: torch.Tensor
    S: torch.Tensor

    def args(self, tau: float = TAU):
        return self.Z, self.user, self.weight, self.V, self.S, tau

    def to(self, device) -> Case:
        return Case(*(t.to(device) for t in (self.Z, self.user, self.weight, self.V, self.S)))


def make_case(
    M, d, K, N, *, dtype=torch.float32, users="sorted", weights="user_mean", seed=0
) -> Case:
    """Random inputs of the op. users: sorted | shuffled | one-pair | gaps | each-one | one."""
    g = torch.Generator().manual_seed(seed)
    if users == "each-one":  # every user has exactly one row (M = N)
        user = torch.arange(M)
    elif users == "one":  # a single user owns every row
        user = torch.zeros(M, dtype=torch.long)
    elif users == "one-pair":  # user 0 has a single row, the others share the rest
        user = torch.cat(
            [torch.zeros(1, dtype=torch.long), torch.randint(1, N, (M - 1,), generator=g)]
        )
    elif users == "gaps":  # only even ids have rows: odd users have none
        user = 2 * torch.randint(0, (N + 1) // 2, (M,), generator=g)
    else:
        user = torch.randint(0, N, (M,), generator=g)
    user = user.sort().values
    if users == "shuffled":  # rows of one user scattered over the matrix
        user = user[torch.randperm(M, generator=g)]
    Z = torch.randn(M, d, generator=g).to(dtype)
    V = torch.randn(d, K, generator=g)
    S = torch.softmax(torch.randn(N, K, generator=g), dim=1)
    if weights == "user_mean":
        counts = torch.bincount(user, minlength=N).to(torch.float32)
        weight = 1.0 / counts[user]
    else:  # pair_mean
        weight = torch.full((M,), 1.0 / M)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return Case(Z, user, weight.to(acc), V.to(acc), S.to(acc))


def math_in(dtype, Z, user, weight, V, S, tau):
    """The reference computed entirely in `dtype`: fp64 is the ground truth; bf16/fp16
    is "the torch reference run in low precision" of the flash-attention error rule."""
    return lowrank_bt_reference(Z, user, weight, V, S, tau, dtype=dtype)


def assert_outputs_close(out, ref, rtol):
    """Per output, error relative to the output's scale (elements near 0 use it too)."""
    for name, a, b in zip(("loss", "margin", "dV", "dS"), out, ref, strict=True):
        assert a.shape == b.shape, name
        b = b.to(a.dtype)
        scale = b.abs().max().clamp_min(1e-30) if b.numel() else 1.0
        torch.testing.assert_close(
            a, b, rtol=rtol, atol=rtol * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


SHAPES = [
    # M, d, K, N, users
    pytest.param(97, 33, 1, 5, "sorted", id="M-prime-d-odd-K1"),
    pytest.param(101, 257, 64, 7, "sorted", id="K64-d-odd"),
    pytest.param(64, 48, 4, 3, "shuffled", id="shuffled-users"),
    pytest.param(131, 64, 8, 9, "one-pair", id="one-pair-user"),
    pytest.param(200, 40, 3, 12, "gaps", id="users-without-rows"),
    pytest.param(1, 16, 2, 1, "sorted", id="M1"),
    pytest.param(0, 16, 2, 3, "sorted", id="M0"),
    pytest.param(1000, 384, 8, 20, "sorted", id="two-chunks"),
    pytest.param(150, 96, 64, 150, "each-one", id="K64-one-pair-users"),
    pytest.param(700, 130, 1, 1, "one", id="K1-one-user-all-rows"),
    pytest.param(333, 64, 25, 40, "shuffled", id="K25-shuffled"),
]


def test_reference_in_fp64_matches_autograd():
    """The oracle's hand-written gradients equal autograd through its own margin."""
    case = make_case(50, 20, 3, 4, dtype=torch.float64, users="shuffled")
    V = case.V.clone().requires_grad_()
    S = case.S.clone().requires_grad_()
    margin = lowrank_margin_reference(case.Z, case.user, V, S)
    loss = (case.weight * F.softplus(-TAU * margin)).sum()
    loss.backward()
    loss_ref, margin_ref, dV, dS = lowrank_bt_reference(*case.args())
    torch.testing.assert_close(loss_ref, loss.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(margin_ref, margin.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(dV, V.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(dS, S.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize(("M", "d", "K", "N", "users"), SHAPES)
def test_fp32_matches_reference(device, M, d, K, N, users):
    case = make_case(M, d, K, N, users=users).to(device)
    out = torch.ops.lore.lowrank_bt(*case.args())
    assert all(t.dtype == torch.float32 for t in out)
    assert_outputs_close(out, lowrank_bt_reference(*case.args()), rtol=2e-5)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("M", "d", "K", "N", "users"),
    [s for s in SHAPES if s.id not in ("users-without-rows", "M1", "M0")],
)
def test_low_precision_error_within_2x_torch(device, dtype, M, d, K, N, users):
    """Flash-attention rule: error vs fp64 at most 2x that of torch run in `dtype`."""
    case = make_case(M, d, K, N, dtype=dtype, users=users).to(device)
    truth = math_in(torch.float64, *case.args())
    torch_low = math_in(dtype, *case.args())
    out = torch.ops.lore.lowrank_bt(*case.args())
    for name, a, t, b in zip(("loss", "margin", "dV", "dS"), out, truth, torch_low, strict=True):
        err = (a.double() - t).abs().max().item()
        err_torch = (b.double() - t).abs().max().item()
        assert err <= 2 * err_torch + 1e-12, f"{name}: {err:.3e} > 2 x {err_torch:.3e}"


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_project_matches_reference(device, dtype):
    case = make_case(77, 45, 5, 3, dtype=dtype).to(device)
    P = torch.ops.lore.project(case.Z, case.V)
    ref = project_reference(case.Z, case.V)
    torch.testing.assert_close(P, ref, rtol=2e-5, atol=2e-5 * ref.abs().max().item())


@pytest.mark.parametrize("device", NATIVE)
def test_strided_and_transposed_Z(device):
    """Z as a column slice of a wider matrix (row stride != d) and as a transpose."""
    case = make_case(70, 32, 4, 5).to(device)
    wide = torch.randn(70, 50, device=device)
    wide[:, 5:37] = case.Z
    ref = lowrank_bt_reference(*case.args())
    for Z in (wide[:, 5:37], case.Z.T.contiguous().T):
        out = torch.ops.lore.lowrank_bt(Z, *case.args()[1:])
        assert_outputs_close(out, ref, rtol=2e-5)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("weights", ["user_mean", "pair_mean"])
def test_reduction_weights(device, weights):
    """user_mean: sum over users of each user's mean NLL; pair_mean: the global mean."""
    case = make_case(300, 24, 3, 11, users="gaps", weights=weights).to(device)
    loss, margin, _, _ = torch.ops.lore.lowrank_bt(*case.args())
    nll = F.softplus(-TAU * margin.double())
    if weights == "user_mean":
        expected = sum(nll[case.user == u].mean() for u in case.user.unique())
    else:
        expected = nll.mean()
    torch.testing.assert_close(
        loss.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("device", NATIVE)
def test_gradients_through_lowrank_bt_loss(device, monkeypatch):
    """Backward rescales the saved gradients; compared with autograd through fp64 math."""
    monkeypatch.delenv("LORE_BACKEND", raising=False)
    case = make_case(150, 40, 6, 8).to(device)
    V = case.V.clone().requires_grad_()
    S = case.S.clone().requires_grad_()
    loss, margin = lore_kernels.lowrank_bt_loss(case.Z, case.user, case.weight, V, S,
                                                Likelihood(TAU))
    assert not margin.requires_grad
    (3.0 * loss).backward()

    V64 = case.V.double().requires_grad_()
    S64 = case.S.double().requires_grad_()
    ref_loss = math_in(torch.float64, case.Z, case.user, case.weight, V64, S64, TAU)[0]
    (3.0 * ref_loss).backward()
    torch.testing.assert_close(V.grad.double(), V64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(S.grad.double(), S64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("label_noise", [0.0, 0.1])
def test_gradcheck_fp64(device, label_noise):
    """fp64 Z runs the same kernels with fp64 accumulation, so finite differences apply
    (to the plain and the label-noise likelihood)."""
    case = make_case(23, 7, 3, 4, dtype=torch.float64, users="shuffled").to(device)
    V = case.V.clone().requires_grad_()
    S = case.S.clone().requires_grad_()

    def loss_of(V, S):
        return torch.ops.lore.lowrank_bt(case.Z, case.user, case.weight, V, S, 0.5,
                                         label_noise)[0]

    assert torch.autograd.gradcheck(loss_of, (V, S))
    Z = case.Z.clone().requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.lore.project, (Z, V))


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(device, dtype):
    case = make_case(40, 24, 4, 5, dtype=dtype).to(device)
    V = case.V.clone().requires_grad_()
    S = case.S.clone().requires_grad_()
    torch.library.opcheck(torch.ops.lore.lowrank_bt, (case.Z, case.user, case.weight, V, S, TAU))
    torch.library.opcheck(torch.ops.lore.project, (case.Z, V))


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("torch_deterministic", [False, True])
def test_deterministic_across_calls(device, torch_deterministic, monkeypatch):
    """Fixed-order reductions everywhere (no atomics): bitwise-equal outputs, with or
    without torch's deterministic mode (which, on CUDA, wants cuBLAS configured)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    case = make_case(3000, 96, 8, 40, dtype=torch.bfloat16).to(device)
    torch.use_deterministic_algorithms(torch_deterministic)
    try:
        first = torch.ops.lore.lowrank_bt(*case.args())
        second = torch.ops.lore.lowrank_bt(*case.args())
    finally:
        torch.use_deterministic_algorithms(False)
    for name, a, b in zip(("loss", "margin", "dV", "dS"), first, second, strict=True):
        assert torch.equal(a, b), name


@needs_cpu_kernel
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs at least 2 CPU cores")
def test_cpu_kernel_uses_several_threads():
    """Without -fopenmp in compile and link flags the kernel silently runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        case = make_case(4000, 64, 4, 10)
        torch.ops.lore.lowrank_bt(*case.args())
        _isa, chunks, threads_seen = torch.ops.lore._cpu_last_call()
        assert chunks == 2
        assert threads_seen == 2
    finally:
        torch.set_num_threads(before)


def _isas():
    """Instruction sets this CPU can run, found by asking the kernel for each."""
    supported = []
    case = make_case(8, 4, 1, 1)
    for name in ("generic", "avx2", "avx512"):
        os.environ["LORE_CPU_ISA"] = name
        try:
            torch.ops.lore.project(case.Z, case.V)
            supported.append(name)
        except (RuntimeError, ValueError):
            pass
        finally:
            del os.environ["LORE_CPU_ISA"]
    return supported


@needs_cpu_kernel
def test_every_cpu_instruction_set_matches_reference(monkeypatch):
    """The kernels are compiled per instruction set; each must agree with the oracle."""
    isas = _isas()
    assert "generic" in isas
    # d = 77: every path widens staged rows; d = 96 (a multiple of 2 x 16 lanes):
    # bf16 is read in place as pairs and fp16 widened in registers.
    cases = [
        make_case(203, 77, 9, 6, dtype=torch.bfloat16, users="shuffled"),
        make_case(203, 96, 9, 6, dtype=torch.bfloat16),
        make_case(203, 96, 3, 6, dtype=torch.float16),
        make_case(203, 96, 3, 6, dtype=torch.float32, users="one-pair"),
    ]
    for case in cases:
        ref = lowrank_bt_reference(*case.args())
        for level, name in enumerate(("generic", "avx2", "avx512")):
            if name not in isas:
                continue
            monkeypatch.setenv("LORE_CPU_ISA", name)
            assert_outputs_close(torch.ops.lore.lowrank_bt(*case.args()), ref, rtol=2e-5)
            assert torch.ops.lore._cpu_last_call()[0] == level
            margin = torch.ops.lore.lowrank_margin(case.Z, case.user, case.V, case.S)
            torch.testing.assert_close(margin, ref[1], rtol=2e-5, atol=2e-5 * ref[1].abs().max())


@needs_cpu_kernel
def test_bad_isa_name_is_an_error(monkeypatch):
    monkeypatch.setenv("LORE_CPU_ISA", "sse9")
    case = make_case(8, 4, 1, 1)
    with pytest.raises((RuntimeError, ValueError), match="LORE_CPU_ISA"):
        torch.ops.lore.project(case.Z, case.V)


@pytest.mark.parametrize("device", NATIVE)
def test_bad_inputs_name_the_culprit(device):
    case = make_case(10, 6, 2, 3).to(device)
    bad_user = case.user.clone()
    bad_user[4] = 7
    with pytest.raises(RuntimeError, match=r"user\[4\] = 7 is out of range \[0, 3\)"):
        torch.ops.lore.lowrank_bt(case.Z, bad_user, case.weight, case.V, case.S, TAU)
    with pytest.raises(RuntimeError, match="V must be Float"):
        torch.ops.lore.lowrank_bt(case.Z, case.user, case.weight, case.V.double(), case.S, TAU)
    with pytest.raises(RuntimeError, match="S must be"):
        torch.ops.lore.lowrank_bt(case.Z, case.user, case.weight, case.V, case.S[:, :1], TAU)
    with pytest.raises(RuntimeError, match="weight must be 1-D"):
        torch.ops.lore.lowrank_bt(case.Z, case.user, case.weight[:5], case.V, case.S, TAU)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("M", "d", "K", "N", "users"), SHAPES)
def test_margin_matches_reference(device, dtype, M, d, K, N, users):
    """lowrank_margin (per-user heads) against the per-row reference, and equal to
    the margin lowrank_bt returns for the same inputs."""
    case = make_case(M, d, K, N, dtype=dtype, users=users).to(device)
    margin = torch.ops.lore.lowrank_margin(case.Z, case.user, case.V, case.S)
    ref = lowrank_margin_reference(case.Z, case.user, case.V, case.S)
    scale = ref.abs().max().item() if M else 1.0
    torch.testing.assert_close(margin, ref, rtol=2e-5, atol=2e-5 * scale)
    fused_margin = torch.ops.lore.lowrank_bt(*case.args())[1]
    torch.testing.assert_close(margin, fused_margin, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("device", NATIVE)
def test_margin_opcheck_and_public_entry(device, monkeypatch):
    monkeypatch.delenv("LORE_BACKEND", raising=False)
    case = make_case(40, 24, 4, 5, dtype=torch.bfloat16).to(device)
    torch.library.opcheck(torch.ops.lore.lowrank_margin, (case.Z, case.user, case.V, case.S))
    out = lore_kernels.lowrank_margin(case.Z, case.user, case.V, case.S)
    torch.testing.assert_close(
        out, torch.ops.lore.lowrank_margin(case.Z, case.user, case.V, case.S)
    )


@needs_cpu_kernel
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("users", ["one", "sorted", "shuffled"])
def test_users_cut_by_thread_boundaries(threads, users):
    """A user whose rows span two or more threads' chunks gets the sum of its parts,
    in a fixed order: same result as the reference, bitwise equal across calls."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # 3 users over 999 rows: every chunk boundary falls inside a user.
        case = make_case(999, 72, 5, 3 if users != "one" else 1, users=users, seed=3)
        first = torch.ops.lore.lowrank_bt(*case.args())
        assert torch.ops.lore._cpu_last_call()[1] == threads
        second = torch.ops.lore.lowrank_bt(*case.args())
    finally:
        torch.set_num_threads(before)
    assert_outputs_close(first, lowrank_bt_reference(*case.args()), rtol=2e-5)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


# -- the label-noise likelihood: P = eps + (1 - 2 eps) sigmoid(tau margin) -------
NOISY_SHAPES = [s for s in SHAPES if s.id in ("M-prime-d-odd-K1", "K64-d-odd", "shuffled-users",
                                               "one-pair-user", "M0", "two-chunks",
                                               "K25-shuffled")]


def test_label_noise_reference_matches_autograd():
    """The oracle's noisy loss and gradients equal autograd through the plain formula,
    with logits large enough (|tau margin| up to ~40) that a naive log would fail."""
    case = make_case(60, 20, 3, 4, dtype=torch.float64, users="shuffled")
    for eps, tau in ((0.05, 0.5), (0.3, 2.0)):
        V = case.V.clone().requires_grad_()
        S = case.S.clone().requires_grad_()
        margin = lowrank_margin_reference(case.Z, case.user, V, S)
        p = eps + (1 - 2 * eps) * torch.sigmoid(tau * margin)
        loss = -(case.weight * torch.log(p)).sum()
        loss.backward()
        loss_ref, _, dV, dS = lowrank_bt_reference(*case.args(tau), eps)
        torch.testing.assert_close(loss_ref, loss.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(dV, V.grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(dS, S.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("eps", [0.05, 0.3])
@pytest.mark.parametrize(("M", "d", "K", "N", "users"), NOISY_SHAPES)
def test_label_noise_fp32_matches_reference(device, eps, M, d, K, N, users):
    case = make_case(M, d, K, N, users=users).to(device)
    out = torch.ops.lore.lowrank_bt(*case.args(0.5), eps)
    assert_outputs_close(out, lowrank_bt_reference(*case.args(0.5), eps), rtol=2e-5)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_label_noise_low_precision_error_within_2x_torch(device, dtype):
    case = make_case(333, 64, 25, 40, dtype=dtype, users="shuffled").to(device)
    truth = lowrank_bt_reference(*case.args(0.5), 0.1, dtype=torch.float64)
    torch_low = lowrank_bt_reference(*case.args(0.5), 0.1, dtype=dtype)
    out = torch.ops.lore.lowrank_bt(*case.args(0.5), 0.1)
    for name, a, t, b in zip(("loss", "margin", "dV", "dS"), out, truth, torch_low, strict=True):
        err = (a.double() - t).abs().max().item()
        err_torch = (b.double() - t).abs().max().item()
        assert err <= 2 * err_torch + 1e-12, f"{name}: {err:.3e} > 2 x {err_torch:.3e}"


@pytest.mark.parametrize("device", NATIVE)
def test_label_noise_bounds_the_loss_of_huge_margins(device):
    """At logits in the thousands every row costs at most c * -log(eps), gradients
    vanish, nothing overflows; eps = 0 keeps the unbounded Bradley-Terry loss."""
    case = make_case(64, 48, 4, 3, users="shuffled").to(device)
    eps, tau = 0.05, 200.0
    loss, margin, dV, dS = torch.ops.lore.lowrank_bt(*case.args(tau), eps)
    assert all(torch.isfinite(t).all() for t in (loss, margin, dV, dS))
    bound = -(case.weight.sum() * torch.log(torch.tensor(eps))).item()
    assert 0 < loss.item() <= bound * (1 + 1e-6)
    # at such logits a row's gradient moves by |logit| x its margin's rounding
    # error (~1e-4 here), for torch's fp32 as for the kernel: checked against fp64
    truth = lowrank_bt_reference(*case.args(tau), eps, dtype=torch.float64)
    assert_outputs_close((loss, margin, dV, dS), truth, rtol=1e-3)
    plain = torch.ops.lore.lowrank_bt(*case.args(tau))[0]
    assert plain.item() > 10 * bound


@pytest.mark.parametrize("device", NATIVE)
def test_label_noise_zero_is_the_plain_op(device):
    case = make_case(97, 33, 3, 5).to(device)
    default = torch.ops.lore.lowrank_bt(*case.args())
    explicit = torch.ops.lore.lowrank_bt(*case.args(), 0.0)
    for a, b in zip(default, explicit, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("eps", [-0.1, 0.5, float("nan")])
def test_bad_label_noise_is_an_error(device, eps):
    case = make_case(10, 6, 2, 3).to(device)
    with pytest.raises(RuntimeError, match="label_noise must be in"):
        torch.ops.lore.lowrank_bt(*case.args(), eps)
    with pytest.raises(ValueError, match="label_noise must be in"):
        lore_kernels.lowrank_bt(*case.args(), eps)


@needs_cpu_kernel
def test_label_noise_every_cpu_instruction_set(monkeypatch):
    isas = _isas()
    case = make_case(203, 96, 9, 6, dtype=torch.bfloat16, users="shuffled")
    ref = lowrank_bt_reference(*case.args(0.5), 0.05)
    for name in ("generic", "avx2", "avx512"):
        if name in isas:
            monkeypatch.setenv("LORE_CPU_ISA", name)
            assert_outputs_close(torch.ops.lore.lowrank_bt(*case.args(0.5), 0.05), ref, rtol=2e-5)


def test_label_probability_and_log_likelihood_agree():
    logit = torch.linspace(-800, 800, 2001, dtype=torch.float64)
    for eps in (0.0, 0.01, 0.2):
        likelihood = Likelihood(tau=1.0, label_noise=eps)
        p = likelihood.probability(logit)
        log_p = likelihood.log_likelihood(logit)
        assert torch.isfinite(log_p).all()
        torch.testing.assert_close(log_p.exp(), p, rtol=1e-12, atol=1e-300)
        assert (p >= eps).all() and (p <= 1 - eps).all()


@pytest.mark.parametrize("eps", [0.0, 0.05])
def test_likelihood_applies_tau_inside_and_its_terms_are_the_loss_gradient(eps):
    """Callers pass margins: tau scales them inside every method; `terms` is
    (-c log P, d/dm of it) and `fisher` the expected squared score about the margin."""
    margin = torch.linspace(-300, 300, 61, dtype=torch.float64, requires_grad=True)
    at_tau, at_one = Likelihood(0.02, eps), Likelihood(1.0, eps)
    torch.testing.assert_close(at_tau.probability(margin), at_one.probability(0.02 * margin))
    c = torch.rand(61, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss, g = at_tau.terms(margin.detach(), c)
    torch.testing.assert_close(loss, -c * at_tau.log_likelihood(margin.detach()))
    auto, = torch.autograd.grad(-(c * at_tau.log_likelihood(margin)).sum(), margin)
    torch.testing.assert_close(g, auto)
    p = at_tau.probability(margin)
    score_1, = torch.autograd.grad(p.log().sum(), margin, retain_graph=True)
    score_0, = torch.autograd.grad((1 - p).log().sum(), margin)
    expected = p * score_1**2 + (1 - p) * score_0**2
    torch.testing.assert_close(at_tau.fisher(margin.detach()), expected.detach())
    torch.testing.assert_close(Likelihood(0.02, eps).tempered(2.0).tau, 0.01)


@pytest.mark.parametrize(("tau", "eps"), [(0.0, 0.0), (-1.0, 0.0), (float("nan"), 0.0),
                                          (0.01, 0.5), (0.01, -0.1)])
def test_likelihood_refuses_a_bad_setting(tau, eps):
    with pytest.raises(ValueError, match=r"tau|label_noise"):
        Likelihood(tau, eps)


@needs_cpu_kernel
@pytest.mark.parametrize(("tau", "rtol"), [(0.5, 2e-5), (50.0, 1e-3)])
def test_plain_terms_across_the_logit_range_every_instruction_set(monkeypatch, tau, rtol):
    """Full CPU tiles compute exp and log1p as 4-lane polynomials: against the fp64
    reference from logits near 0 to the thousands (where a row's gradient moves by
    |logit| x its margin's rounding, hence the looser tolerance), on every path."""
    case = make_case(400, 96, 5, 7, users="shuffled", seed=5)
    truth = lowrank_bt_reference(*case.args(tau), dtype=torch.float64)
    for name in _isas():
        monkeypatch.setenv("LORE_CPU_ISA", name)
        out = torch.ops.lore.lowrank_bt(*case.args(tau))
        assert all(torch.isfinite(t).all() for t in out)
        assert_outputs_close(out, truth, rtol=rtol)


# -- long rows, misaligned Z, CUDA graphs (the CUDA kernel's register tiles) ------
needs_cuda_kernel = pytest.mark.skipif(
    not (torch.cuda.is_available() and _native.has_kernel("cuda")),
    reason="no CUDA device or CUDA kernel not built",
)


def _check_against_truth(out, case, dtype, tau=TAU):
    """fp32: within 5e-5 of fp64 math (d = 4096 sums); 16-bit: the 2x torch rule."""
    truth = math_in(torch.float64, *case.args(tau))
    if dtype == torch.float32:
        assert_outputs_close(out, truth, rtol=5e-5)
        return
    torch_low = math_in(dtype, *case.args(tau))
    for name, a, t, b in zip(("loss", "margin", "dV", "dS"), out, truth, torch_low, strict=True):
        err = (a.double() - t).abs().max().item()
        err_torch = (b.double() - t).abs().max().item()
        assert err <= 2 * err_torch + 1e-12, f"{name}: {err:.3e} > 2 x {err_torch:.3e}"


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("users", ["sorted", "shuffled", "one"])
def test_rows_of_4096(device, dtype, users):
    """d = 4096: 8-16 KB rows, several 16-byte chunks per thread on the GPU."""
    case = make_case(600, 4096, 8, 15 if users != "one" else 1, dtype=dtype, users=users)
    case = case.to(device)
    out = torch.ops.lore.lowrank_bt(*case.args())
    _check_against_truth(out, case, dtype)
    margin = torch.ops.lore.lowrank_margin(case.Z, case.user, case.V, case.S)
    torch.testing.assert_close(margin, out[1], rtol=1e-6, atol=1e-6 * margin.abs().max())


@pytest.mark.parametrize("device", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [384, 4096, 1001])
def test_misaligned_Z(device, dtype, d):
    """Z at storage offset 1 (rows 2 or 4 bytes past a 16-byte boundary): the
    element-wise loads give the same values as the aligned 16-byte ones (on the
    GPU bitwise: the same sums in the same order)."""
    case = make_case(300, d, 4, 7, dtype=dtype, users="shuffled").to(device)
    flat = torch.empty(case.Z.numel() + 1, dtype=dtype, device=device)
    Z = flat[1:].view(case.Z.shape)
    Z.copy_(case.Z)
    out = torch.ops.lore.lowrank_bt(Z, *case.args()[1:])
    aligned = torch.ops.lore.lowrank_bt(*case.args())
    for a, b in zip(out, aligned, strict=True):
        if device == "cuda":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())
    _check_against_truth(out, case, dtype)


@pytest.mark.parametrize("device", NATIVE)
def test_user_changed_in_place_is_reindexed(device):
    """The CUDA op keeps a row index per user tensor; an in-place change of the
    tensor (a new version) must not reuse the old one."""
    case = make_case(400, 64, 4, 9, users="sorted").to(device)
    user = case.user.clone()
    torch.ops.lore.lowrank_bt(case.Z, user, case.weight, case.V, case.S, TAU)
    user.copy_(user.flip(0))  # now descending: other users, other order
    out = torch.ops.lore.lowrank_bt(case.Z, user, case.weight, case.V, case.S, TAU)
    ref = lowrank_bt_reference(case.Z, user, case.weight, case.V, case.S, TAU)
    assert_outputs_close(out, ref, rtol=2e-5)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_capture_and_replay(dtype):
    """After one call on its inputs (which builds the row index) the op makes no
    host sync and no allocation outside the graph pool: it captures, and replays
    follow new values of V and S in place."""
    case = make_case(3000, 384, 8, 40, dtype=dtype, users="shuffled").to("cuda")
    V, S = case.V.clone(), case.S.clone()

    def step():
        return torch.ops.lore.lowrank_bt(case.Z, case.user, case.weight, V, S, TAU)

    expected = step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, expected, strict=True):
        assert torch.equal(a, b)
    V.mul_(0.5)
    S.copy_(torch.softmax(torch.randn_like(S), dim=1))
    graph.replay()
    fresh = step()
    for a, b in zip(out, fresh, strict=True):
        assert torch.equal(a, b)
    new_user = case.user.clone()
    with pytest.raises(RuntimeError, match="before capturing"):  # noqa: SIM117
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            torch.ops.lore.lowrank_bt(case.Z, new_user, case.weight, V, S, TAU)
