"""Backend selection, LORE_BACKEND, and the torch fallback when nothing native is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lore_kernels
from lore_kernels import _native
from lore_kernels.reference import lowrank_bt_reference


def _case():
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(50, 12, generator=g)
    user = torch.randint(0, 4, (50,), generator=g).sort().values
    return (
        Z,
        user,
        torch.full((50,), 0.02),
        torch.randn(12, 3, generator=g),
        torch.rand(4, 3, generator=g),
        0.01,
    )


def test_backend_reports_what_runs(monkeypatch):
    monkeypatch.delenv("LORE_BACKEND", raising=False)
    expected = "cpu" if _native.has_kernel("cpu") else "torch"
    assert lore_kernels.backend("cpu") == expected
    if not torch.cuda.is_available():
        assert lore_kernels.backend() == expected


def test_forcing_torch_runs_the_reference(monkeypatch):
    monkeypatch.setenv("LORE_BACKEND", "torch")
    args = _case()
    assert lore_kernels.backend() == "torch"
    for a, b in zip(lore_kernels.lowrank_bt(*args), lowrank_bt_reference(*args), strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not _native.has_kernel("cpu"), reason="CPU kernel not built")
def test_torch_and_cpu_backends_give_the_same_gradients(monkeypatch):
    grads = {}
    for name in ("torch", "cpu"):
        monkeypatch.setenv("LORE_BACKEND", name)
        Z, user, weight, V, S, tau = _case()
        V.requires_grad_()
        S.requires_grad_()
        loss, margin = lore_kernels.lowrank_bt_loss(Z, user, weight, V, S,
                                                    lore_kernels.Likelihood(tau))
        loss.backward()
        grads[name] = (loss.detach(), margin, V.grad, S.grad)
    for a, b in zip(grads["torch"], grads["cpu"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("LORE_BACKEND", "tpu")
    with pytest.raises(ValueError, match="LORE_BACKEND must be one of"):
        lore_kernels.backend()


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_forcing_an_unbuilt_backend_says_how_to_build(monkeypatch, name):
    if _native.has_kernel(name):
        pytest.skip(f"the {name} kernel is built here")
    monkeypatch.setenv("LORE_BACKEND", name)
    with pytest.raises(RuntimeError, match=r"not built.*scripts/setup\.sh"):
        lore_kernels.backend()
    with pytest.raises(RuntimeError, match="not built"):
        lore_kernels.lowrank_bt(*_case())


@pytest.mark.skipif(not _native.has_kernel("cpu"), reason="CPU kernel not built")
def test_forced_backend_must_match_the_device(monkeypatch):
    if not _native.has_kernel("cuda"):
        monkeypatch.setenv("LORE_BACKEND", "cpu")
        meta = torch.empty(3, 2, device="meta")
        with pytest.raises(RuntimeError, match="tensors are on meta"):
            lore_kernels.project(meta, torch.empty(2, 1, device="meta"))
        return
    monkeypatch.setenv("LORE_BACKEND", "cuda")
    Z, *_ = _case()
    with pytest.raises(RuntimeError, match="tensors are on cpu"):
        lore_kernels.project(Z, torch.randn(12, 2))


def test_imports_and_runs_without_the_extension():
    """A missing or broken _C: one log line, the torch backend, same results."""
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "sys.modules['lore_kernels._C'] = None;"
        "import torch, lore_kernels;"
        "assert lore_kernels.backend() == 'torch', lore_kernels.backend();"
        "Z = torch.randn(9, 4); V = torch.randn(4, 2);"
        "assert torch.equal(lore_kernels.project(Z, V), Z @ V)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "LORE_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "lore_kernels" in ln]
    assert len(lines) == 1 and "torch backend" in lines[0], proc.stderr
