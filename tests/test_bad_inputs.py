"""A corpus of malformed inputs and faults, for every command and the Python API.

Each case must end in exit code 2 with one line ``prog: error: ...`` naming
the culprit (file, line, field or value), no traceback, and an earlier output
directory left byte for byte as it was. The corpus is built here, from a tiny
data set in the generic layout and a real (tiny) lore-train run.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lore_datasets import DataError, DataSource, synthetic_benchmark
from lore_datasets.cli import main as prepare_main
from lore_datasets.runtime.outputs import atomic_write_text, output_directory
from lore_datasets.storage import save_benchmark
from lore_eval.cli import main as eval_main
from lore_train import PersonalRewardModel, TrainConfig, fit
from lore_train.cli import main as train_main
from lore_train.experiment import run_sweep

D = 12  # the tiny data set's embedding dimension
FAST = ["--steps", "5", "--fewshot-steps", "5", "--min-pairs", "10", "--no-progress"]


def write_dataset(root: Path, *, header: str = "user_id,prompt_id,response_a,response_b,label",
                  encoding: str = "utf-8", bad_line: str | None = None) -> Path:
    """8 users x 24 comparisons in the generic layout (d = 12), optionally with a bad line."""
    rng = np.random.default_rng(0)
    n_prompts = 25
    emb = rng.standard_normal((2 * n_prompts, D)).astype(np.float32)
    directions = rng.standard_normal((2, D))
    root.mkdir(parents=True)
    np.save(root / "embeddings.npy", emb)
    with open(root / "responses.jsonl", "w") as f:
        for p in range(n_prompts):
            for i in range(2):
                f.write(json.dumps({"response_id": f"{p}:{i}", "prompt_id": str(p), "text": "t"}) + "\n")
    lines = [header]
    for u in range(8):
        for p in rng.choice(n_prompts, 24, replace=False):
            better = (emb[2 * p] - emb[2 * p + 1]) @ directions[u % 2] > 0
            lines.append(f"user{u},{p},{p}:0,{p}:1,{'a' if better else 'b'}")
    if bad_line is not None:
        lines.insert(3, bad_line)
    (root / "comparisons.csv").write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return root


def _edit_text(name: str, old: str, new: str):
    def mutate(directory: Path) -> None:
        path = directory / name
        path.write_text(path.read_text().replace(old, new, 1))
    return mutate


MUTATIONS = {
    "NaN embeddings": lambda d: np.save(d / "embeddings.npy", np.full((50, D), np.nan, np.float32)),
    "integer embeddings": lambda d: np.save(d / "embeddings.npy", np.zeros((50, D), np.int64)),
    "pickled embeddings": lambda d: np.save(d / "embeddings.npy", np.array([{}] * 50, dtype=object),
                                            allow_pickle=True),
    "garbage embeddings": lambda d: (d / "embeddings.npy").write_bytes(b"garbage"),
    "header only": lambda d: (d / "comparisons.csv").write_text(
        "user_id,prompt_id,response_a,response_b,label\n"),
    "empty comparisons": lambda d: (d / "comparisons.csv").write_text(""),
    "missing column": _edit_text("comparisons.csv", "label", "verdict"),
    "bad JSON line": _edit_text("responses.jsonl", '"text": "t"}', '"text": "t"'),
    "duplicate response id": _edit_text("responses.jsonl", '"1:0"', '"0:0"'),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The data set, its broken variants, and a finished run with checkpoints."""
    base = tmp_path_factory.mktemp("corpus")
    good = write_dataset(base / "good")
    bad = {
        "duplicate column": write_dataset(base / "dup", header="user_id,prompt_id,response_a,"
                                          "response_b,label,user_id"),
        "latin-1": write_dataset(base / "latin1", encoding="latin-1",
                                 bad_line="us\xe9r9,1,1:0,1:1,a"),
        "unknown response": write_dataset(base / "unknown", bad_line="user1,1,1:0,99:9,a"),
        "bad label": write_dataset(base / "label", bad_line="user1,1,1:0,1:1,maybe"),
        "short row": write_dataset(base / "short", bad_line="user1,1,1:0"),
    }
    trunc = write_dataset(base / "gz")
    data = gzip.compress((trunc / "comparisons.csv").read_bytes())
    (trunc / "comparisons.csv").unlink()
    (trunc / "comparisons.csv.gz").write_bytes(data[: len(data) // 2])
    bad["truncated gz"] = trunc
    noemb = write_dataset(base / "noemb")
    (noemb / "embeddings.npy").unlink()
    bad["no embeddings"] = noemb
    wrongrows = write_dataset(base / "rows")
    np.save(wrongrows / "embeddings.npy", np.zeros((3, D), np.float32))
    bad["too few embedding rows"] = wrongrows
    for case, mutate in MUTATIONS.items():
        directory = write_dataset(base / case.replace(" ", "_"))
        mutate(directory)
        bad[case] = directory
    canonical = base / "canonical"  # the saved (safetensors + JSON) form, its index cut short
    save_benchmark(DataSource(dataset=str(good)).load(split={"min_pairs_per_user": 10}), canonical)
    index = canonical / "benchmark.json"
    index.write_bytes(index.read_bytes()[:40])
    bad["truncated benchmark.json"] = canonical
    run = base / "run"
    assert train_main(["--dataset", str(good), "--K", "1", "2", "--out", str(run), *FAST]) == 0
    return {"good": good, "bad": bad, "run": run, "base": base}


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) with its bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def call(main, args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, prog: str, pattern: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(rf"{prog}( \w+)?: error: ", lines[0]), err  # "lore-eval fewshot: error: ..."
    assert re.search(pattern, lines[0]), (pattern, lines[0])


def old_run(corpus, tmp_path: Path) -> Path:
    """A copy of the finished run: the output place a failing command must leave alone."""
    out = tmp_path / "old"
    shutil.copytree(corpus["run"], out)
    return out


# -- lore-train: values ------------------------------------------------------

TRAIN_VALUES = [
    (["--lr", "nan"], r"lr must be a finite number, got nan"),
    (["--tau", "inf"], r"tau must be a finite number, got inf"),
    (["--lr-w=-inf"], r"lr_w must be a finite number, got -inf"),
    (["--fewshot-lr", "0"], r"fewshot_lr must be > 0, got 0"),
    (["--lr-w", "-1"], r"lr_w must be > 0, got -1"),
    (["--steps", "0"], r"steps must be >= 1 \(nothing would be trained\), got 0"),
    (["--fewshot-steps", "0"], r"fewshot_steps must be >= 1"),
    (["--log-every", "0"], r"log_every must be >= 1"),
    (["--K", "2", "-1"], r"--K -1 .*K must be >= 0, got -1"),
    (["--alpha", "nan"], r"alpha must be a finite number, got nan"),
    (["--alpha", "-1"], r"alpha must be >= 0, got -1"),
    (["--prune-threshold", "2"], r"prune_threshold must be in \[0, 1\)"),
    (["--select", "--val-fraction", "1.5"], r"val_fraction must be strictly between 0 and 1, got 1.5"),
    (["--checkpoint-every", "0"], r"--checkpoint-every must be >= 1, got 0"),
    (["--select-folds", "0"], r"--select-folds must be >= 1, got 0"),
    (["--label-noise", "0.5"], r"label_noise must be in \[0, 0.5\) .*got 0.5"),
    (["--select-label-noise", "0", "-0.1"],
     r"--select-label-noise -0.1: label_noise must be in \[0, 0.5\)"),
    (["--steps", "many"], r"--steps: invalid int value: 'many'"),
    (["--mode", "sideways"], r"--mode: invalid choice: 'sideways'"),
    (["--K"], r"--K: expected at least one argument"),
    (["--bogus-flag"], r"unrecognized arguments: --bogus-flag"),
    (["--device", "tpu"], r"--device 'tpu': not a device name"),
    (["--device", "cuda:x"], r"--device 'cuda:x': not a device name"),
    (["--device", "meta"], r"--device 'meta': lore runs on cpu or cuda"),
    (["--preset", "fastest"], r"--preset: invalid choice: 'fastest'"),
    # found only once the data is loaded (d = 12), still before anything trains
    (["--K", "2", "13"], r"K=13 exceeds the embedding dimension d=12 of .*good"),
    (["--K", "0", "1", "--alpha", "1", "--anchor", "v_ref"],
     r"good: nothing can train, every \(K, alpha\) cell would be skipped: anchor 'v_ref' "
     r"\(alpha > 0\) needs v_ref.*; no reference head"),
    (["--K", "0"], r"nothing can train.*no reference head"),
    (["--overwrite", "--resume"], r"--overwrite and --resume contradict each other"),
    (["--unseen-fraction", "nan"], r"unseen_user_fraction must be strictly between 0 and 1, got nan"),
    (["--min-pairs", "0"], r"min_pairs_per_user must be >= 1, got 0"),
]
if not torch.cuda.is_available():
    TRAIN_VALUES.append((["--device", "cuda:0"], r"--device cuda:0: this torch has no usable CUDA"))


@pytest.mark.parametrize(("args", "pattern"), TRAIN_VALUES, ids=[" ".join(a) for a, _ in TRAIN_VALUES])
def test_lore_train_bad_value(corpus, tmp_path, capsys, args, pattern):
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    overwrite = [] if "--resume" in args else ["--overwrite"]
    code, err = call(train_main, ["--dataset", corpus["good"], *FAST, "--out", out, *overwrite,
                                  *args], capsys)
    assert_one_line_error(code, err, "lore-train", pattern)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["old"]  # no staging left behind


def test_lore_train_fit_that_diverges_mid_run(corpus, tmp_path, capsys):
    """Fails after the data loaded and training began: the old run must survive that too."""
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    code, err = call(train_main, ["--dataset", corpus["good"], *FAST, "--K", "1", "2", "--lr",
                                  "1e30", "--tau", "1e30", "--out", out, "--overwrite"], capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()  # the data summary came first; then one error line
    assert [line for line in lines if ": error: " in line] == lines[-1:]
    assert re.search(r"^lore-train: error: loss became (nan|inf) at step \d+ \(K=1\)", lines[-1])
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["old"]


# -- lore-train: data ----------------------------------------------------------

TRAIN_DATA = [
    ("duplicate column", r"comparisons.csv.*user_id"),
    ("latin-1", r"comparisons.csv.*(UTF-8|utf-8)"),
    ("unknown response", r"comparisons.csv.*line 4.*99:9"),
    ("bad label", r"comparisons.csv.*line 4.*maybe"),
    ("short row", r"comparisons.csv.*line 4"),
    ("truncated gz", r"comparisons.csv.gz"),
    ("no embeddings", r"embeddings.npy"),
    ("too few embedding rows", r"embeddings.npy|responses.jsonl"),
    ("NaN embeddings", r"embeddings.npy: NaN/Inf in 50 embedding rows"),
    ("integer embeddings", r"embeddings.npy: expected a 2-D float matrix"),
    ("pickled embeddings", r"embeddings.npy: not a readable .npy matrix"),
    ("garbage embeddings", r"embeddings.npy: not a readable .npy matrix"),
    ("header only", r"comparisons.csv: no comparisons"),
    ("empty comparisons", r"comparisons.csv: empty file"),
    ("missing column", r"comparisons.csv.*label"),
    ("bad JSON line", r"responses.jsonl, line 1: invalid JSON"),
    ("duplicate response id", r"responses.jsonl, line 3: duplicate response_id '0:0'"),
    ("truncated benchmark.json", r"benchmark.json"),
]


@pytest.mark.parametrize(("case", "pattern"), TRAIN_DATA, ids=[c for c, _ in TRAIN_DATA])
def test_lore_train_bad_data(corpus, tmp_path, capsys, case, pattern):
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    code, err = call(train_main, ["--dataset", corpus["bad"][case], *FAST, "--out", out,
                                  "--overwrite"], capsys)
    assert_one_line_error(code, err, "lore-train", pattern)
    assert snapshot(out) == before


def test_lore_train_missing_data_dir(tmp_path, capsys):
    code, err = call(train_main, ["--dataset", tmp_path / "nowhere", *FAST,
                                  "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "lore-train", r"unknown data set.*nowhere")
    assert not (tmp_path / "o").exists()


# -- lore-train: output places -------------------------------------------------

def test_lore_train_refuses_a_non_empty_out_before_loading(corpus, tmp_path, capsys):
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    # the data set does not exist: the out check must come first to be seen
    code, err = call(train_main, ["--dataset", tmp_path / "nowhere", "--out", out], capsys)
    assert_one_line_error(code, err, "lore-train", rf"--out {re.escape(str(out))}: not empty.*"
                          "--overwrite.*--resume")
    assert snapshot(out) == before


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_lore_train_out_that_cannot_be_a_directory(tmp_path, capsys, where):
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "run"
    code, err = call(train_main, ["--dataset", tmp_path / "nowhere", "--out", out], capsys)
    pattern = "exists and is not a directory" if where == "file" else "results.txt is not a directory"
    assert_one_line_error(code, err, "lore-train", pattern)
    assert blocker.read_text() == "keep me"


def test_lore_train_unwritable_out(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere: make the permission check say no
        import lore_datasets.runtime.outputs

        real_access = os.access
        monkeypatch.setattr(lore_datasets.runtime.outputs.os, "access",
                            lambda p, mode: Path(p) != locked and real_access(p, mode))
    try:
        code, err = call(train_main, ["--dataset", tmp_path / "nowhere", "--out", locked / "run"],
                         capsys)
    finally:
        locked.chmod(0o700)
    assert_one_line_error(code, err, "lore-train", "locked is not writable")
    assert list(locked.iterdir()) == []


def test_lore_train_resume_refuses_another_sweep_or_a_foreign_directory(corpus, tmp_path, capsys):
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    code, err = call(train_main, ["--dataset", corpus["good"], *FAST, "--steps", "6",
                                  "--K", "1", "2", "--out", out, "--resume"], capsys)
    assert_one_line_error(code, err, "lore-train",
                          r"results.json: cannot resume: the earlier run had config.train")
    assert snapshot(out) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err = call(train_main, ["--dataset", corpus["good"], *FAST, "--K", "1",
                                  "--out", foreign, "--resume"], capsys)
    assert_one_line_error(code, err, "lore-train", r"foreign: cannot resume: no results.json")
    assert snapshot(foreign) == {"notes.txt": b"mine"}


def test_overwrite_replaces_the_whole_directory(corpus, tmp_path, capsys):
    out = old_run(corpus, tmp_path)
    (out / "stale.txt").write_text("from an older run")
    code, _ = call(train_main, ["--dataset", corpus["good"], *FAST, "--K", "1", "--out", out,
                                "--overwrite"], capsys)
    assert code == 0
    assert not (out / "stale.txt").exists()
    assert not (out / "checkpoints" / "K2_alpha0").exists()  # the old run's cell is gone
    assert [r["K"] for r in json.loads((out / "results.json").read_text())["runs"]] == [1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["old"]


def test_debug_switch_shows_the_traceback(tmp_path):
    args = [sys.executable, "-m", "lore_train.cli", "--lr", "nan", "--out", str(tmp_path / "o")]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2
    assert quiet.stderr.strip() == "lore-train: error: lr must be a finite number, got nan"
    loud = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LORE_DEBUG": "1"})
    assert loud.returncode != 0
    assert "Traceback" in loud.stderr and "ValueError: lr must be a finite number" in loud.stderr


# -- checkpoints: lore-eval and PersonalRewardModel.load ---------------------------

def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def _truncate(directory: Path) -> None:
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) - 20])


def _int_tensors(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    n = len(config["user_ids"])
    save_file({"V": torch.zeros(D, 2, dtype=torch.int32), "W": torch.zeros(n, 2)},
              directory / "model.safetensors")


BROKEN_CHECKPOINTS = {
    "truncated safetensors": (_truncate, r"model.safetensors: not a readable safetensors file"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{K: 2,"), r"config.json: not JSON"),
    "config a list": (lambda d: (d / "config.json").write_text("[1, 2]"),
                      r"config.json: expected a JSON object"),
    "config without K": (lambda d: _edit_config(d, K=None), r"config.json: K is None, not a"),
    "dim disagrees": (lambda d: _edit_config(d, dim=99), r"config.json: dim is 99 but V has 12 rows"),
    "K below columns": (lambda d: _edit_config(d, K=1, kept_rank=2),
                        r"config.json: K is 1 but V has 2 columns"),
    "kept_rank disagrees": (lambda d: _edit_config(d, kept_rank=3),
                            r"config.json: kept_rank is 3 but V has 2 columns"),
    "a user too few": (lambda d: _edit_config(d, user_ids=json.loads(
        (d / "config.json").read_text())["user_ids"][:-1]), r"config.json: \d+ user_ids but W has"),
    "duplicate users": (lambda d: _edit_config(d, user_ids=["u"] * len(json.loads(
        (d / "config.json").read_text())["user_ids"])), r"config.json: user_ids has duplicates"),
    "seen too short": (lambda d: _edit_config(d, seen=[True]), r"config.json: seen has 1 entries"),
    "bad tau": (lambda d: _edit_config(d, tau=-1.0), r"config.json: tau is -1.0"),
    "unknown train key": (lambda d: _edit_config(d, train_config={"K": 2, "speed": 3}),
                          r"config.json: train_config: unknown TrainConfig key 'speed'"),
    "integer tensors": (_int_tensors, r"model.safetensors: tensor 'V' has dtype torch.int32"),
    "missing config": (lambda d: (d / "config.json").unlink(), r"config.json: not a lore checkpoint"),
    "missing tensors": (lambda d: (d / "model.safetensors").unlink(),
                        r"model.safetensors: not a lore checkpoint"),
}


def broken_checkpoint(corpus, tmp_path: Path, case: str) -> Path:
    directory = tmp_path / "ckpt"
    shutil.copytree(corpus["run"] / "checkpoints" / "K2_alpha0", directory)
    BROKEN_CHECKPOINTS[case][0](directory)
    return directory


@pytest.mark.parametrize("case", list(BROKEN_CHECKPOINTS))
def test_load_names_the_file_of_a_broken_checkpoint(corpus, tmp_path, case):
    directory = broken_checkpoint(corpus, tmp_path, case)
    with pytest.raises((DataError, FileNotFoundError), match=BROKEN_CHECKPOINTS[case][1]):
        PersonalRewardModel.load(directory)


@pytest.mark.parametrize("case", list(BROKEN_CHECKPOINTS))
def test_lore_eval_fewshot_broken_checkpoint(corpus, tmp_path, capsys, case):
    directory = broken_checkpoint(corpus, tmp_path, case)
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    code, err = call(eval_main, ["fewshot", "--checkpoint", directory, "--dataset", corpus["good"],
                                 "--min-pairs", "10", "--out", out, "--trials", "1"], capsys)
    assert_one_line_error(code, err, "lore-eval", BROKEN_CHECKPOINTS[case][1])
    assert snapshot(out) == before


EVAL_VALUES = [
    (["--trials", "0"], r"--trials must be >= 1, got 0"),
    (["--shots", "5", "-1"], r"--shots must be >= 0, got -1"),
    (["--lr", "nan"], r"--lr must be a finite number > 0, got nan"),
    (["--steps", "0"], r"--steps must be >= 1"),
    (["--device", "tpu"], r"--device 'tpu': not a device name"),
    (["--K", "9"], r"no checkpoint with K in \[9\]"),
    (["--trials", "x"], r"--trials: invalid int value"),
]


@pytest.mark.parametrize(("args", "pattern"), EVAL_VALUES, ids=[" ".join(a) for a, _ in EVAL_VALUES])
def test_lore_eval_fewshot_bad_value(corpus, tmp_path, capsys, args, pattern):
    run = old_run(corpus, tmp_path)
    before = snapshot(run)
    code, err = call(eval_main, ["fewshot", "--run", run, *args], capsys)
    assert_one_line_error(code, err, "lore-eval", pattern)
    assert snapshot(run) == before


def test_lore_eval_fewshot_out_is_a_file(corpus, tmp_path, capsys):
    blocker = tmp_path / "out.json"
    blocker.write_text("{}")
    code, err = call(eval_main, ["fewshot", "--run", corpus["run"], "--out", blocker], capsys)
    assert_one_line_error(code, err, "lore-eval", r"out.json: exists and is not a directory")
    assert blocker.read_text() == "{}"


def test_lore_eval_fewshot_missing_run(tmp_path, capsys):
    code, err = call(eval_main, ["fewshot", "--run", tmp_path / "gone"], capsys)
    assert_one_line_error(code, err, "lore-eval", r"gone/checkpoints: no checkpoints here")


@pytest.mark.parametrize(("content", "pattern"), [
    (None, r"results.json: no results.json here"),
    ("{\"runs\": [", r"results.json: not a lore results file \(not JSON"),
    ("[]", r"results.json: not a lore results file \(no 'runs'\)"),
    ("\xff\xfe", r"results.json: not a lore results file"),
])
def test_lore_eval_report_bad_results(tmp_path, capsys, content, pattern):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_bytes(content.encode("latin-1"))
    before = snapshot(run)
    code, err = call(eval_main, ["report", run], capsys)
    assert_one_line_error(code, err, "lore-eval", pattern)
    assert snapshot(run) == before


# -- lore-prepare ------------------------------------------------------------------

def test_lore_prepare_bad_inputs(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"user_id": "a", "prompt": "p", "chosen": "x", "rejected": "y"}\n'
                     '{"user_id": "a", "prompt": "p", "chosen": "x"}\n')
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"user_id": "\xe9", "prompt": "p", "chosen": "x", "rejected": "y"}\n'
                      .encode("latin-1"))
    blocker = tmp_path / "taken"
    blocker.write_text("keep")
    cases = [
        (["embed", "--source", "pairs", "--pairs", tmp_path / "none.jsonl", "--out", tmp_path / "o"],
         r"none.jsonl: file not found"),
        (["embed", "--source", "pairs", "--pairs", pairs, "--out", tmp_path / "o"],
         r"pairs.jsonl, line 2: missing field\(s\) \['rejected'\]"),
        (["embed", "--source", "pairs", "--pairs", latin, "--out", tmp_path / "o"],
         r"latin.jsonl.*UTF-8"),
        (["embed", "--source", "tldr", "--pairs", pairs, "--out", tmp_path / "o"],
         r"--pairs FILE goes with --source pairs"),
        (["embed", "--source", "pairs", "--pairs", tmp_path / "none.jsonl", "--device", "tpu",
          "--out", tmp_path / "o"], r"--device 'tpu': not a device name"),
        (["embed", "--source", "pairs", "--pairs", pairs, "--out", blocker],
         r"--out .*taken: exists and is not a directory"),
        (["convert", "--dataset", tmp_path / "nowhere", "--out", tmp_path / "o"], r"nowhere"),
        (["convert", "--dataset", "synthetic", "--out", blocker / "x"], r"taken is not a directory"),
        (["synthetic", "--users", "1", "--out", tmp_path / "o"], r"at least 2 users"),
        (["synthetic", "--max-shard-size", "0", "--out", tmp_path / "o"],
         r"--max-shard-size: size must be positive"),
        (["synthetic", "--dtype", "int8", "--out", tmp_path / "o"], r"--dtype: invalid choice"),
    ]
    for args, pattern in cases:
        code, err = call(prepare_main, args, capsys)
        assert_one_line_error(code, err, "lore-prepare", pattern)
    assert blocker.read_text() == "keep"
    assert not (tmp_path / "o").exists()


# -- the Python API ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["alpha", "lr", "lr_w", "tau", "prune_threshold", "fewshot_lr"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_config_refuses_non_finite_floats(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        TrainConfig(**{name: value})


def test_config_refuses_runs_that_train_nothing_and_unknown_devices():
    for changes, pattern in [({"steps": 0}, "steps must be >= 1"),
                             ({"fewshot_steps": 0}, "fewshot_steps must be >= 1"),
                             ({"device": "tpu"}, "device 'tpu' is not a device name")]:
        with pytest.raises(ValueError, match=pattern):
            TrainConfig(**changes)


def test_fit_refuses_K_above_the_dimension():
    bench, _ = synthetic_benchmark(seed=0, num_users=4, pairs_per_user=20, dim=4, rank=2)
    with pytest.raises(ValueError, match="K=5 exceeds the embedding dimension d=4"):
        fit(bench.seen_train, TrainConfig(K=5, steps=1), progress=False)


def test_sweep_api_refuses_all_skipped_and_leaves_the_output_alone(corpus, tmp_path):
    bench, _ = synthetic_benchmark(seed=0, num_users=6, pairs_per_user=20, dim=4, rank=2)
    assert bench.v_ref is None
    out = old_run(corpus, tmp_path)
    before = snapshot(out)
    with pytest.raises(DataError, match="nothing can train"):
        run_sweep(bench, [0, 2], [1.0], TrainConfig(steps=2, anchor="v_ref"), out,
                       overwrite=True, progress=False)
    with pytest.raises(DataError, match="not empty"):
        run_sweep(bench, [2], [0.0], TrainConfig(steps=2), out, progress=False)

    def fail(entry):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):  # a run that fails half-way
        run_sweep(bench, [1, 2], [0.0], TrainConfig(steps=2, fewshot_steps=2), out,
                       overwrite=True, progress=False, on_run=fail)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["old"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = atomic_write_text(tmp_path / "results.json", "old")

    def half_written(tmp: Path) -> None:
        tmp.write_text("{\"half")
        raise OSError("killed")

    from lore_datasets.runtime.outputs import atomic_write

    with pytest.raises(OSError, match="killed"):
        atomic_write(path, half_written)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_output_directory_swaps_only_on_success(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), output_directory(out, overwrite=True) as work:
        (work / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert snapshot(out) == {"old.txt": b"old"}
    with output_directory(out, overwrite=True) as work:
        assert work != out
        (work / "new.txt").write_text("new")
    assert snapshot(out) == {"new.txt": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
