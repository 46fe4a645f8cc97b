"""One source per setting: TrainConfig gives the flags, the presets and the stored form."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import pytest
import torch

from lore_datasets import DataError, DataSource, SplitConfig
from lore_kernels import Likelihood
from lore_kernels.reference import lowrank_bt_reference
from lore_train import PRESETS, TrainConfig
from lore_train.cli import BY_COMMAND, SWEPT, build_parser, main
from lore_train.solver import logit_gradient


def test_every_training_setting_is_a_flag_with_its_default_and_choices():
    parser = build_parser()
    text = " ".join(parser.format_help().split())
    for f in fields(TrainConfig):
        if f.name not in SWEPT + BY_COMMAND:
            assert f"--{f.name.replace('_', '-')}" in text, f.name
    assert "--mode {joint,alternating}" in text and "(default: 1000; presets may change it)" in text
    assert "{reference,reference-regularized}" in text


def test_from_dict_round_trips_and_names_an_unknown_key():
    config = TrainConfig.preset("reference-regularized", K=4)
    assert TrainConfig.from_dict(config.to_dict()) == config
    stored = {**config.to_dict(), "rnak": 3}
    with pytest.raises(DataError, match=r"ckpt/config.json: unknown TrainConfig key 'rnak'"):
        TrainConfig.from_dict(stored, source="ckpt/config.json")
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        TrainConfig.preset("fast")
    assert PRESETS["reference"] == {} and TrainConfig.preset("reference") == TrainConfig()


def test_the_preset_reaches_the_run_and_flags_override_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "reference-regularized", "--dataset", "synthetic", "--K", "1",
            "--steps", "5", "--fewshot-steps", "3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["preset"] == "reference-regularized"
    assert config["train"]["mode"] == "alternating" and config["train"]["steps"] == 5
    assert config["alphas"] == [1e4]  # the preset's alpha: synthetic data has no v_ref,
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["anchor"] == "population"  # so alpha pulls toward the population head
    # the stored settings are the resolved records, readable by from_dict
    assert TrainConfig.from_dict(config["train"]).fewshot_lr == 0.5
    assert SplitConfig.from_dict(config["split"]).min_pairs_per_user == SplitConfig().min_pairs_per_user
    assert DataSource.from_dict(config["data"]) == DataSource(dataset="synthetic")


def test_lore_train_needs_neither_lore_eval_nor_matplotlib():
    code = ("import sys, lore_train, lore_train.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lore_eval', 'matplotlib')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_fewshot_gradient_is_the_reference_losss_gradient():
    g = torch.Generator().manual_seed(0)
    P = torch.randn(30, 4, generator=g, dtype=torch.float64)
    user = torch.randint(0, 5, (30,), generator=g)
    c = torch.rand(30, generator=g, dtype=torch.float64)
    W = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    loss = lowrank_bt_reference(P, user, c, torch.eye(4, dtype=torch.float64),
                                torch.softmax(W, dim=1), 0.3)[0]
    (expected,) = torch.autograd.grad(loss, W)
    torch.testing.assert_close(logit_gradient(P, user, c, W.detach(), Likelihood(0.3)), expected)


def test_without_matplotlib_the_run_writes_everything_but_the_plot(tmp_path, monkeypatch, capsys):
    import lore_train.cli
    import lore_train.experiment

    monkeypatch.setattr(lore_train.experiment, "can_plot", lambda: False)
    monkeypatch.setattr(lore_train.cli, "can_plot", lambda: False)
    out = tmp_path / "run"
    assert main(["--dataset", "synthetic", "--K", "1", "--steps", "3", "--fewshot-steps", "2",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").is_file() and not (out / "accuracy_vs_rank.png").exists()
    assert "lore-eval report" in capsys.readouterr().err
