"""A stopped fit or sweep, resumed, equals bit for bit one that never stopped."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from lore_datasets import DataError, save_benchmark, synthetic_benchmark
from lore_train import TrainConfig, fit
from lore_train.cli import main
from lore_train.train_state import STATE_FILE


class Stop(Exception):
    """Stands for a kill: raised from the step callback."""


def stop_at(step: int, seen: list[int]):
    def on_step(done: int) -> None:
        seen.append(done)
        if done == step:
            raise Stop

    return on_step


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark(seed=0, num_users=8, pairs_per_user=30, dim=6, rank=2)[0]


@pytest.mark.parametrize("changes", [
    {},  # joint Adam
    {"mode": "alternating", "w_init": "uniform", "reduction": "pair_mean"},  # two optimizers
    {"lr_w": 0.05, "w_init": "zeros", "prune_threshold": 0.05},
])
def test_resumed_fit_is_bitwise_the_uninterrupted_fit(bench, tmp_path, changes):
    config = TrainConfig(K=3, steps=23, log_every=3, seed=4, **changes)
    want, want_history = fit(bench.seen_train, config, progress=False)

    steps: list[int] = []
    with pytest.raises(Stop):
        fit(bench.seen_train, config, progress=False, checkpoint_dir=tmp_path,
            checkpoint_every=5, on_step=stop_at(12, steps))
    assert steps[-1] == 12 and (tmp_path / STATE_FILE).is_file()

    resumed: list[int] = []
    got, got_history = fit(bench.seen_train, config, progress=False, checkpoint_dir=tmp_path,
                           checkpoint_every=5, resume=True, on_step=resumed.append)
    assert resumed[0] == 11  # continued after the state of step 10, not from the start
    assert torch.equal(got.V, want.V) and torch.equal(got.W, want.W)
    assert got_history.loss == want_history.loss and got_history.steps == want_history.steps


def test_resume_refuses_other_settings_or_data(bench, tmp_path):
    config = TrainConfig(K=2, steps=10)
    fit(bench.seen_train, config, progress=False, checkpoint_dir=tmp_path, checkpoint_every=4)
    with pytest.raises(DataError, match=rf"{STATE_FILE}: cannot resume: .*lr=0.5.*lr=0.25"):
        fit(bench.seen_train, config.with_(lr=0.25), progress=False, checkpoint_dir=tmp_path,
            resume=True)
    with pytest.raises(DataError, match=rf"{STATE_FILE}: cannot resume: the training pairs differ"):
        fit(bench.seen_test, config, progress=False, checkpoint_dir=tmp_path, resume=True)
    (tmp_path / STATE_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(DataError, match=rf"{STATE_FILE}: not a readable lore training state"):
        fit(bench.seen_train, config, progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint_dir"):
        fit(bench.seen_train, config, progress=False, resume=True)


def test_lore_train_resume_finishes_an_interrupted_run_exactly(tmp_path, monkeypatch, capsys):
    """Kill the second of three cells mid-fit, resume, compare with a run that never stopped."""

    data = tmp_path / "data"
    save_benchmark(synthetic_benchmark(seed=1, num_users=10, pairs_per_user=30, dim=6, rank=2)[0],
                   data)
    args = ["--dataset", str(data), "--K", "1", "2", "3", "--steps", "30", "--fewshot-steps", "10",
            "--checkpoint-every", "7", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0

    sweep_module = importlib.import_module("lore_train.sweep")  # the package exports a sweep()
    real_fit = sweep_module.fit

    def killed_fit(pairs, config, **options):
        if config.K == 2:
            options["on_step"] = stop_at(17, [])
        return real_fit(pairs, config, **options)

    monkeypatch.setattr(sweep_module, "fit", killed_fit)
    out = tmp_path / "resumed"
    with pytest.raises(Stop):
        main([*args, "--out", str(out)])
    state = out / "train_state" / "K2_alpha0" / STATE_FILE
    assert state.is_file()
    assert [r["K"] for r in json.loads((out / "results.json").read_text())["runs"]] == [1]
    monkeypatch.setattr(sweep_module, "fit", real_fit)
    assert main([*args, "--out", str(out)]) == 2  # a non-empty --out needs --resume
    assert "--resume" in capsys.readouterr().err
    trained: dict[int, list[int]] = {}

    def recording_fit(pairs, config, **options):
        options["on_step"] = trained.setdefault(config.K, []).append
        return real_fit(pairs, config, **options)

    monkeypatch.setattr(sweep_module, "fit", recording_fit)
    assert main([*args, "--out", str(out), "--resume"]) == 0
    # K=1 was finished (not refitted); K=2 continued after its state of step 14; K=3 ran whole
    assert sorted(trained) == [2, 3]
    assert trained[2][0] == 15 and trained[3][0] == 1
    assert not (out / "train_state").exists()

    def comparable(run_dir):
        doc = json.loads((run_dir / "results.json").read_text())
        for run in doc["runs"]:
            run.pop("train_seconds"), run.pop("fewshot_seconds")
        return doc["runs"]

    assert comparable(out) == comparable(tmp_path / "whole")
    for K in (1, 2, 3):
        name = f"checkpoints/K{K}_alpha0/model.safetensors"
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
