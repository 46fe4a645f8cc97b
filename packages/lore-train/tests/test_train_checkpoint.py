"""Checkpoints: a directory of safetensors + JSON that round-trips exactly."""

from __future__ import annotations

import json

import pytest
import torch

from lore_datasets import DataError, PreferencePairs
from lore_train import PersonalRewardModel, TrainConfig, UnknownUserError, fit, personalize


def test_checkpoint_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    pairs = PreferencePairs(torch.randn(40, 6, generator=g), torch.arange(4).repeat_interleave(10),
                            ["w1", "w2", "w3", "w4"])
    v_ref = torch.randn(6, generator=g)
    model, _ = fit(pairs, TrainConfig(K=3, steps=20), v_ref=v_ref, progress=False)
    new = PreferencePairs(torch.randn(6, 6, generator=g), torch.tensor([0, 0, 0, 1, 1, 1]), ["x", "y"])
    model = personalize(model, new, TrainConfig(K=3, fewshot_steps=20))
    path = model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = PersonalRewardModel.load(path)
    assert torch.equal(loaded.V, model.V) and torch.equal(loaded.W, model.W)
    assert torch.equal(loaded.v_ref, v_ref)
    assert loaded.user_ids == model.user_ids and loaded.seen == model.seen
    assert loaded.K == 3 and loaded.tau == model.tau
    assert torch.equal(loaded.margin(new), model.margin(new))
    assert json.loads((path / "config.json").read_text())["train_config"]["K"] == 3


def test_unknown_user_is_a_clear_error(tmp_path):
    model = PersonalRewardModel(torch.randn(4, 2), torch.zeros(1, 2), ["known"])
    stranger = PreferencePairs(torch.randn(2, 4), torch.tensor([0, 0]), ["stranger"])
    with pytest.raises(UnknownUserError, match="stranger"):
        model.margin(stranger)
    with pytest.raises(FileNotFoundError, match="not a lore checkpoint"):
        PersonalRewardModel.load(tmp_path)


def _checkpoint(tmp_path):
    pairs = PreferencePairs(torch.randn(20, 5), torch.arange(2).repeat_interleave(10), ["a", "b"])
    model, _ = fit(pairs, TrainConfig(K=2, steps=5, fewshot_steps=7), progress=False)
    return model, model.save(tmp_path / "ckpt")


def test_a_checkpoint_keeps_the_resolved_train_config(tmp_path):
    model, path = _checkpoint(tmp_path)
    loaded = PersonalRewardModel.load(path)
    assert loaded.train_config == model.train_config == TrainConfig(K=2, steps=5, fewshot_steps=7)
    config = json.loads((path / "config.json").read_text())
    config["train_config"]["fewshot_stpes"] = 9
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"ckpt/config.json: train_config: unknown TrainConfig "
                                        r"key 'fewshot_stpes'"):
        PersonalRewardModel.load(path)


def test_a_format_1_checkpoint_still_loads(tmp_path):
    model, path = _checkpoint(tmp_path)
    config = json.loads((path / "config.json").read_text())
    train = {("rank" if k == "K" else k): v for k, v in config.pop("train_config").items()}
    config.pop("format")
    old = {"format": 1, "rank": config.pop("K"), **config,
           "meta": {**config["meta"], "train_config": train}}
    (path / "config.json").write_text(json.dumps(old))
    loaded = PersonalRewardModel.load(path)
    assert loaded.K == 2 and loaded.train_config == model.train_config
    assert "train_config" not in loaded.meta
