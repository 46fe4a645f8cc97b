"""Early stopping, the population-head anchor and the basis norm control."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lore_kernels
from lore_datasets import make_synthetic, split_validation
from lore_train import TrainConfig, fit, fit_few_shot, personalize
from lore_train.anchor import anchor_kind
from lore_train.fewshot import fewshot_prior
from lore_train.stopping import BestStep, UserBestSteps, mean_user_weights
from lore_train.trainer import population_head

# A fast optimizer on 24 pairs per user in d = 16: the validation loss turns up
# (best step ~50) long before 300 steps, so stopping and rollback both happen.
ES = TrainConfig(K=3, steps=300, lr=5.0, lr_w=0.05, w_init="zeros", early_stopping=True,
                 eval_every=5, patience=60, seed=1)


@pytest.fixture(scope="module")
def pairs():
    data, _ = make_synthetic(num_users=16, pairs_per_user=24, dim=16, num_prompts=50, seed=2)
    return data


def test_best_step_keeps_the_lowest_loss_and_stops_after_patience():
    t = BestStep(patience=20)
    x = torch.zeros(2)
    assert not t.update(0, 1.0, x + 0)
    assert not t.update(10, 0.5, x + 1)
    assert not t.update(20, math.nan, x + 2)  # never "best"
    assert not t.update(29, 0.7, x + 3)
    assert t.update(30, 0.6, x + 4)  # 20 steps after the best
    assert (t.best_step, t.best_loss) == (10, 0.5) and torch.equal(t.state[0], x + 1)
    assert BestStep(patience=0).update(10**6, 1.0, x) is False  # 0: never stops


def test_early_stopped_fit_refits_all_pairs_for_exactly_the_best_step(pairs):
    model, history = fit(pairs, ES, progress=False)
    es = history.early_stopping
    assert es["refit"] and es["validation"]["split_by"] == "prompt"
    assert 0 <= es["best_step"] < ES.steps and es["steps_run"] <= ES.steps
    assert es["best_val_loss"] == min(es["val_loss"])
    assert len(es["val_steps"]) == len(es["val_loss"]) and es["train_loss"]
    # the refit is the plain fit on every pair, stopped after best_step + 1 updates
    plain, _ = fit(pairs, ES.with_(early_stopping=False, steps=es["best_step"] + 1),
                   progress=False)
    assert torch.allclose(model.V, plain.V) and torch.allclose(model.W, plain.W)


def test_a_given_validation_set_is_used_without_refit(pairs):
    split = split_validation(pairs, 0.2, seed=0, split_by="pair")
    model, history = fit(split.train, ES, validation=split.val, progress=False)
    es = history.early_stopping
    assert not es["refit"] and es["validation"]["split_by"] == "given"
    c = mean_user_weights(split.val, "user_mean")
    loss = lore_kernels.lowrank_bt_loss(split.val.features, split.val.user, c, model.V.detach(),
                                        model.weights().detach(), ES.likelihood)[0]
    assert float(loss) == pytest.approx(es["best_val_loss"], rel=1e-5)
    assert es["best_val_loss"] < es["val_loss"][-1]  # it did overfit, and rolled back


def test_few_shot_users_stop_at_their_own_best_step(pairs):
    seen = pairs.select_users(pairs.user_ids[:10])
    new = pairs.select_users(pairs.user_ids[10:])
    config = ES.with_(fewshot_steps=200, fewshot_lr=0.5)
    model, _ = fit(seen, config.with_(early_stopping=False), progress=False)
    out = personalize(model, new, config)
    info = out.meta["fewshot_early_stopping"]
    assert info["validation"]["split_by"] == "pair" and info["users_without_validation"] == 0
    assert 1 <= info["best_step_min"] <= info["best_step_median"] <= info["best_step_max"] <= 200
    # every user's logits are the full-pool fit's logits at some eval step <= max
    W_new = out.W.detach()[10:]
    settings = config.fewshot().with_(solver="adam")  # personalize's fit (with its prior)
    prior = fewshot_prior(model, settings)
    matched = torch.zeros(new.num_users, dtype=torch.bool)
    for t in range(config.eval_every, info["best_step_max"] + 1, config.eval_every):
        W_t = fit_few_shot(model.V.detach(), new, settings.with_(steps=t), prior=prior)
        matched |= torch.isclose(W_t, W_new, atol=1e-5).all(dim=1)
    assert bool(matched.all())


def test_population_anchor_pulls_columns_toward_the_bt_head(pairs):
    head = population_head(pairs, ES.with_(early_stopping=False))
    bt, _ = fit(pairs, ES.with_(K=1, early_stopping=False), progress=False)
    assert torch.allclose(head, bt.V.detach()[:, 0])
    strong = ES.with_(early_stopping=False, alpha=1e3, alpha_schedule="constant")
    model, _ = fit(pairs, strong, progress=False)
    assert model.meta["anchor"] == "population"
    cos = F.cosine_similarity(model.V.detach(), head[:, None], dim=0)
    free, _ = fit(pairs, ES.with_(early_stopping=False), progress=False)
    free_cos = F.cosine_similarity(free.V.detach(), head[:, None], dim=0)
    assert bool((cos > 0.99).all()) and float(free_cos.min()) < 0.9


def test_anchor_choice_and_errors(pairs):
    v_ref = torch.randn(pairs.dim)
    cfg = ES.with_(alpha=1.0, early_stopping=False)
    assert anchor_kind(cfg, has_v_ref=True) == "v_ref"
    assert anchor_kind(cfg, has_v_ref=False) == "population"
    assert anchor_kind(cfg.with_(anchor="population"), has_v_ref=True) == "population"
    assert anchor_kind(cfg.with_(alpha=0.0), has_v_ref=True) is None
    with pytest.raises(ValueError, match="anchor='v_ref'"):
        anchor_kind(cfg.with_(anchor="v_ref"), has_v_ref=False)
    model, _ = fit(pairs, cfg.with_(steps=20), v_ref=v_ref, progress=False)
    assert model.meta["anchor"] == "v_ref"


def test_user_best_steps_keeps_each_users_lowest_loss_and_fills_the_rest():
    best = UserBestSteps(torch.tensor([2.0, 1.0, 0.0]), default=100)
    best.update(10, torch.tensor([1.0, 3.0, 0.5]))
    best.update(20, torch.tensor([2.0, 1.0, 0.1]))  # user 2 has no validation pairs: ignored
    best.update(30, torch.tensor([0.5, 2.0, 0.0]))
    assert best.best_step.tolist() == [30, 20, 100]
    has_val = best.fill_without_validation()
    assert has_val.tolist() == [True, True, False]
    assert best.best_step.tolist() == [30, 20, 20]  # the lower median of 30 and 20


def test_v_l2_shrinks_the_basis(pairs):
    base = ES.with_(early_stopping=False, steps=100)
    free, _ = fit(pairs, base, progress=False)
    held, _ = fit(pairs, base.with_(v_l2=1.0), progress=False)
    assert held.V.detach().norm() < 0.5 * free.V.detach().norm()


@pytest.mark.parametrize("field,value,match", [
    ("val_fraction", 1.0, "val_fraction"), ("val_split_by", "user", "val_split_by"),
    ("eval_every", 0, "eval_every"), ("patience", -1, "patience"),
    ("anchor", "sft", "anchor"), ("alpha_schedule", "cosine", "alpha_schedule"),
    ("v_l2", -1.0, "v_l2"),
])
def test_new_fields_are_validated(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})
