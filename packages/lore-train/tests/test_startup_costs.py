"""What lore-train saves without changing a number: the torch._dynamo import and the
held-out fits the calibration and the selection share."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lore_datasets import synthetic_benchmark
from lore_train import TrainConfig, heldout, personalize
from lore_train.adam import Adam
from lore_train.calibration import evaluate_calibration
from lore_train.selection import select_model
from lore_train.trainer import fit

CONFIG = TrainConfig(steps=40, lr=0.5, seed=0)


def _descend(optimizer_class: type) -> tuple[torch.Tensor, torch.Tensor, str]:
    g = torch.Generator().manual_seed(0)
    V = torch.randn(6, 3, generator=g, requires_grad=True)
    W = torch.randn(5, 3, generator=g, requires_grad=True)
    opt = optimizer_class([{"params": [V]}, {"params": [W], "lr": 0.3}], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        ((V.sum(0) * W).pow(2).sum() + V.pow(3).sum()).backward()
        opt.step()
    state = opt.state_dict()
    opt.load_state_dict(state)
    return V.detach(), W.detach(), repr(state)


def test_adam_is_torchs_adam_bit_for_bit():
    ours, theirs = _descend(Adam), _descend(torch.optim.Adam)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert ours[2] == theirs[2]


def test_adam_does_not_import_dynamo():
    code = (
        "import sys, torch; from lore_train.adam import Adam;"
        "p = torch.zeros(3, requires_grad=True); opt = Adam([p], lr=0.1);"
        "p.sum().backward(); opt.step(); opt.zero_grad(); opt.load_state_dict(opt.state_dict());"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark(dim=6, num_users=30, pairs_per_user=24, rank=2, seed=0)[0]


def _counting_fits(monkeypatch) -> list[int]:
    """Count the fits `heldout` makes (the real fit runs)."""
    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        return fit(*args, **kwargs)

    monkeypatch.setattr(heldout, "fit", counted)
    return calls


def test_calibration_and_selection_share_their_held_out_fits(bench, monkeypatch):
    Ks = [1, 2]

    def run(fits: heldout.HeldoutFits | None) -> tuple[dict, list[dict], list[dict]]:
        models = [personalize(fit(bench.seen_train, CONFIG.with_(K=K), progress=False)[0],
                              bench.unseen_fewshot, CONFIG.with_(K=K), progress=False)
                  for K in Ks]
        calibration = [evaluate_calibration(m, bench, CONFIG, fits=fits) for m in models]
        selection = select_model(bench, Ks, [0.0], CONFIG, variants=[{}, {"v_l2": 0.1}],
                                 fits=fits)
        candidates = [{k: v for k, v in vars(c).items() if k != "train_seconds"}
                      for c in selection.candidates]
        return selection.chosen.validation, calibration, candidates

    calls = _counting_fits(monkeypatch)
    plain = run(None)
    assert len(calls) == 2 + 4  # calibration per K, selection per (variant, K)
    calls.clear()
    shared = run(heldout.HeldoutFits())
    assert len(calls) == 2 + 2  # the selection's {} candidates are the calibration's fits
    assert shared == plain  # the same numbers


def test_a_different_split_or_config_is_fitted_again(bench, monkeypatch):
    from lore_datasets import split_validation

    calls = _counting_fits(monkeypatch)
    a = split_validation(bench.seen_train, 0.2, seed=0)
    b = split_validation(bench.seen_train, 0.2, seed=1)
    cfg = CONFIG.with_(K=2)
    fits = heldout.HeldoutFits()
    first, _ = fits.fit(bench.seen_train, a, cfg, v_ref=None, pass_validation=False)
    again, _ = fits.fit(bench.seen_train, a, cfg, v_ref=None, pass_validation=True)
    fits.fit(bench.seen_train, b, cfg, v_ref=None, pass_validation=False)
    fits.fit(bench.seen_train, a, cfg.with_(seed=1), v_ref=None, pass_validation=False)
    stopped = cfg.with_(early_stopping=True)  # then the validation rows matter
    fits.fit(bench.seen_train, a, stopped, v_ref=None, pass_validation=False)
    fits.fit(bench.seen_train, a, stopped, v_ref=None, pass_validation=True)
    assert again is first
    assert len(calls) == 5
    heldout.HeldoutFits().fit(bench.seen_train, a, cfg, v_ref=None, pass_validation=False)
    assert len(calls) == 6  # another sweep's fits are its own
