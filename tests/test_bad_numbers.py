"""Bad numbers at every boundary: absurd sizes, non-finite values, incomplete training states.

The CLIs exit 2 with one line naming the flag before allocating or writing
anything; the Python API raises ValueError (DataError is one) naming the
argument, the user or the file, never RuntimeError, LinAlgError, an
EOFError or a loss "blamed on --lr".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lore_datasets import DataError, PreferencePairs, synthetic_benchmark, write_synthetic
from lore_datasets.cli import main as prepare_main
from lore_datasets.sizes import culprits
from lore_eval.cli import main as eval_main
from lore_train import PersonalRewardModel, TrainConfig, fit
from lore_train.cli import main as train_main


def one_line_error(code: int, err: str, prog: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines and lines[-1].startswith(prog) and ": error: " in lines[-1], err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


SIZE_FLAGS = ("--users", "--pairs-per-user", "--dim", "--rank", "--prompts", "--max-shard-size")


@pytest.mark.parametrize(("flags", "culprit"), [
    (["--users", "100000000000"], "--users 100000000000"),
    (["--users", "1000", "--pairs-per-user", "1000000000"], "--pairs-per-user 1000000000"),
    (["--users", "10", "--dim", "1000000000", "--rank", "2"], "--dim 1000000000"),
    (["--rank", "100000000000", "--prompts", "50"], "--rank 100000000000"),
    (["--max-shard-size", "inf"], "--max-shard-size"),
    (["--max-shard-size", "nan"], "--max-shard-size"),
])
def test_lore_prepare_synthetic_absurd_sizes(tmp_path, capsys, flags, culprit):
    out = tmp_path / "data"
    try:
        code = prepare_main(["synthetic", "--out", str(out), *flags])
    except SystemExit as exit_:  # argparse's own one-line usage error
        code = exit_.code
    line = one_line_error(code, capsys.readouterr().err, "lore-prepare", culprit)
    # only the flag at fault, not every sizing flag there is
    assert [f for f in SIZE_FLAGS if f in line] == [culprit.split()[0]], line
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written


def test_write_synthetic_names_the_parameter_at_fault(tmp_path):
    with pytest.raises(DataError, match=r"^dim=1000000000: would need .* of memory") as err:
        write_synthetic(tmp_path / "data", num_users=10, pairs_per_user=10, dim=10**9)
    assert "num_users" not in str(err.value) and "pairs_per_user" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("given", "defaults", "blamed"), [
    ({"a": 1000, "b": 2}, {"a": 1, "b": 1}, ["a"]),  # one flag alone exceeds
    ({"a": 1000, "b": 1000}, {"a": 1, "b": 1}, ["a", "b"]),  # each alone exceeds
    ({"a": 3, "b": 50, "c": 1}, {"a": 1, "b": 1, "c": 1}, ["a", "b"]),  # only together
    ({"a": 200, "b": 5, "c": 1}, {"a": 200, "b": 1, "c": 2}, ["b"]),  # the defaults exceed
    ({"a": 200, "b": 1}, {"a": 200, "b": 1}, []),  # nothing but the defaults
])
def test_culprits_are_the_flags_that_drive_the_excess(given, defaults, blamed):
    def product(values):
        return math.prod(values.values())

    assert culprits(given, defaults, product, 100) == blamed


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e30"])
def test_lore_train_dist_timeout_must_be_a_finite_number(tmp_path, capsys, value):
    code = train_main(["--dataset", "synthetic", "--out", str(tmp_path / "run"),
                       "--dist-timeout", value])
    one_line_error(code, capsys.readouterr().err, "lore-train", "--dist-timeout")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("numbers") / "run"
    assert train_main(["--dataset", "synthetic", "--out", str(out), "--K", "1", "2",
                       "--steps", "5", "--fewshot-steps", "5", "--no-progress",
                       "--no-select"]) == 0
    return out


def test_lore_eval_fewshot_absurd_trials(run_dir, capsys):
    code = eval_main(["fewshot", "--run", str(run_dir), "--trials", "1000000000",
                      "--out", str(run_dir.parent / "fewshot")])
    line = one_line_error(code, capsys.readouterr().err, "lore-eval", "--trials 1000000000",
                          "of memory")
    assert "--shots" not in line, line  # the default shots are not at fault
    assert not (run_dir.parent / "fewshot").exists()


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_bytes((run_dir / "results.json").read_bytes())
    return out


def test_lore_eval_report_on_results_missing_a_setting(run_dir, tmp_path, capsys):
    out = _copy_run(run_dir, tmp_path)
    results = json.loads((out / "results.json").read_text())
    del results["runs"][0]["seen_test"]
    (out / "results.json").write_text(json.dumps(results))
    code = eval_main(["report", str(out), "--no-plots"])
    one_line_error(code, capsys.readouterr().err, "lore-eval", "results.json: malformed",
                   "'seen_test'")
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no report.md


@pytest.mark.parametrize("doc", [
    {"curves": [{"K": 1}]},
    {"curves": [{"K": 1, "alpha": 0, "points": "many"}]},
    {"curves": "none"},
])
def test_lore_eval_report_on_a_malformed_fewshot_json(run_dir, tmp_path, capsys, doc):
    out = _copy_run(run_dir, tmp_path)
    (out / "fewshot.json").write_text(json.dumps(doc))
    code = eval_main(["report", str(out), "--no-plots"])
    one_line_error(code, capsys.readouterr().err, "lore-eval", "fewshot.json: malformed")
    assert not (out / "report.md").exists()


# -- the Python API ------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> PersonalRewardModel:
    bench, _ = synthetic_benchmark(num_users=10, pairs_per_user=30, dim=8)
    config = TrainConfig(K=2, steps=5, fewshot_steps=5)
    trained, _ = fit(bench.seen_train, config, progress=False)
    return trained.fit_posterior(bench.seen_train)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"steps": -3}, r"steps must be >= 1, got -3"),
    ({"steps": 0}, r"steps must be >= 1"),
    ({"steps": 2.5}, r"steps must be an integer"),
    ({"lr": math.nan}, r"lr must be finite and > 0, got nan"),
    ({"lr": -1.0}, r"lr must be finite and > 0"),
    ({"lr": math.inf}, r"lr must be finite and > 0"),
])
def test_adapt_checks_its_numbers(model, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        model.adapt("newcomer", torch.randn(4, model.dim), **kwargs)
    assert "newcomer" not in model.user_ids  # nothing half done


@pytest.mark.parametrize("temperature", [math.nan, 0.0, -1.0, math.inf])
def test_preference_probability_temperature(model, temperature):
    user = model.user_ids[0]
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        model.preference_probability(torch.randn(2, model.dim), torch.randn(2, model.dim), user,
                                     temperature=temperature)


def test_suggest_pairs_refuses_non_finite_candidates(model):
    candidates = torch.randn(6, model.dim)
    candidates[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"embeddings: row 2 is not finite"):
        model.suggest_pairs(model.user_ids[0], candidates, 2)
    with pytest.raises(ValueError, match=r"n must be"):
        model.suggest_pairs(model.user_ids[0], torch.randn(6, model.dim), -1)
    with pytest.raises(ValueError, match=r"embeddings: row 0 is not finite"):
        model.score(torch.full((1, model.dim), math.inf), model.user_ids[0])


def test_a_precision_that_is_not_positive_definite_is_a_value_error(model):
    user = model.user_ids[1]
    saved = model._posteriors[user]
    try:
        model._posteriors[user] = -torch.eye(model.kept_rank, dtype=torch.float64)
        with pytest.raises(ValueError, match=f"user '{user}': posterior precision is not positive"):
            model.score(torch.randn(3, model.dim), user, return_std=True)
        with pytest.raises(ValueError, match="not positive definite"):
            model.suggest_pairs(user, torch.randn(5, model.dim), 2)
        model._posteriors[user] = torch.full((model.kept_rank,) * 2, math.nan, dtype=torch.float64)
        with pytest.raises(ValueError, match="not a finite"):
            model.preference_probability(torch.randn(1, model.dim), torch.randn(1, model.dim), user)
    finally:
        model._posteriors[user] = saved


def test_nan_in_the_data_names_the_row_and_user_not_the_learning_rate():
    features = torch.randn(6, 4)
    features[4, 2] = math.nan
    with pytest.raises(ValueError, match=r"features row 4 \(user b\) is not finite"):
        PreferencePairs(features, torch.tensor([0, 0, 0, 1, 1, 1]), ["a", "b"])


# -- training states ------------------------------------------------------------
@pytest.fixture
def saved_state(tmp_path):
    """A fit that saved its training state (as a run killed after its last save leaves it)."""
    bench, _ = synthetic_benchmark(num_users=8, pairs_per_user=20, dim=6)
    config = TrainConfig(K=2, steps=4)
    fit(bench.seen_train, config, progress=False, checkpoint_dir=tmp_path / "state",
        checkpoint_every=2)
    return bench.seen_train, config, tmp_path / "state" / "train_state.safetensors"


def _rewrite(path: Path, change) -> None:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    lore = json.loads(meta["lore"])
    change(tensors, lore)
    save_file(tensors, path, metadata={"lore": json.dumps(lore)})


@pytest.mark.parametrize(("change", "pattern"), [
    (lambda t, m: t.pop("opt0.0.exp_avg_sq"), r"parameter 0 has no exp_avg_sq"),
    (lambda t, m: [t.pop(k) for k in list(t) if k.startswith("opt")], r"has no step, exp_avg"),
    (lambda t, m: t.update(rng=t["rng"][:100]), r"the random state is torch.uint8 \(100,\)"),
    (lambda t, m: t.pop("rng"), r"no tensor 'rng'"),
    (lambda t, m: m.pop("history"), r"metadata 'history' is missing"),
    (lambda t, m: m.update(done="4"), r"metadata 'done' is missing or not a int"),
    (lambda t, m: t.update({"opt0.0.exp_avg": torch.zeros(3)}), r"opt0\.0\.exp_avg is \(3,\)"),
])
def test_an_incomplete_training_state_is_refused_by_name(saved_state, change, pattern):
    pairs, config, path = saved_state
    _rewrite(path, change)
    with pytest.raises(DataError, match=r"train_state\.safetensors: .*" + pattern) as caught:
        fit(pairs, config, progress=False, checkpoint_dir=path.parent, resume=True)
    assert "\n" not in str(caught.value)


def test_a_complete_training_state_resumes(saved_state):
    pairs, config, path = saved_state
    model, _ = fit(pairs, config, progress=False, checkpoint_dir=path.parent, resume=True)
    assert model.K == 2


def test_lore_train_checkpoints_keep_the_users_posteriors(run_dir):
    for directory in sorted((run_dir / "checkpoints").iterdir()):
        model = PersonalRewardModel.load(directory)
        for user in (model.user_ids[0], model.user_ids[-1]):  # a seen and a few-shot user
            _, std = model.score(torch.randn(3, model.dim), user, return_std=True)
            assert std.shape == (3,) and bool(torch.isfinite(std).all())
