"""`lore-train` end to end on a tiny data set in the generic layout."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from lore_train.cli import main


@pytest.fixture
def tiny_dataset(tmp_path):
    """8 users x 30 comparisons over 25 prompts with 2 responses each; users prefer
    the response closer to one of two hidden directions, so there is signal."""
    rng = np.random.default_rng(0)
    d, n_prompts = 12, 25
    emb = rng.standard_normal((2 * n_prompts, d)).astype(np.float32)
    directions = rng.standard_normal((2, d))
    root = tmp_path / "tiny"
    root.mkdir()
    np.save(root / "embeddings.npy", emb)
    with open(root / "responses.jsonl", "w") as f:
        for p in range(n_prompts):
            for i in range(2):
                f.write(json.dumps({"response_id": f"{p}:{i}", "prompt_id": str(p), "text": "t"}) + "\n")
    lines = ["user_id,prompt_id,response_a,response_b,label"]
    for u in range(8):
        for p in rng.choice(n_prompts, 24, replace=False):
            a, b = 2 * p, 2 * p + 1
            better = (emb[a] - emb[b]) @ directions[u % 2] > 0
            lines.append(f"user{u},{p},{p}:0,{p}:1,{'a' if better else 'b'}")
    (root / "comparisons.csv").write_text("\n".join(lines) + "\n")
    return root


def test_cli_writes_results_with_the_schema(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--dataset", str(tiny_dataset), "--K", "0", "1", "2", "--steps", "30",
                 "--fewshot-steps", "20", "--min-pairs", "10", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped: no reference head" in printed
    results = json.loads((out / "results.json").read_text())
    assert [run["K"] for run in results["runs"]] == [0, 1, 2]
    assert results["config"]["train"]["steps"] == 30
    assert results["dataset"]["split"]["seed"] == 0
    assert results["backend"] in {"torch", "cpu", "cuda"}
    two = results["runs"][2]
    for key in ("seen_train", "seen_test", "unseen_fewshot", "unseen_test"):
        assert two[key]["n_users"] > 0
    assert (out / "accuracy_vs_rank.png").is_file()
    assert (out / "checkpoints" / "K2_alpha0" / "config.json").is_file()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "/no/such/dir"], "unknown data set"),
        (["--dataset", "personalllm", "--data-dir", "/no/such/dir"], "personalllm|/no/such/dir"),
    ],
)
def test_cli_bad_input_is_one_clear_line(args, expected, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lore_train.cli", *args, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.search(expected, proc.stderr)
    assert proc.stderr.strip().count("\n") == 0
