"""`lore-train --dataset tldr|prism|personalllm --data-dir DIR` end to end on tiny
fixtures written in the reference file formats (pickle, torch.save, safetensors + CSV)."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lore_datasets.personalllm import SCORE_COLUMNS
from lore_train.cli import main

DIM = 8


def _signal(rng: np.random.Generator, direction: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A (winning, losing) bf16 pair whose difference leans along ``direction``."""
    a, b = rng.standard_normal((2, DIM))
    if (a - b) @ direction < 0:
        a, b = b, a
    return torch.tensor(a).to(torch.bfloat16), torch.tensor(b).to(torch.bfloat16)


def write_tldr(root: Path, rng: np.random.Generator) -> None:
    directions = rng.standard_normal((2, DIM))
    for split, n in (("train", 30), ("val", 10)):
        data = {}
        for w in range(10):
            entries = []
            for i in range(n + w):
                win, lose = _signal(rng, directions[w % 2])
                entries.append({"text": f"post {split} {w} {i}", "winning_summary": "a",
                                "losing_summary": "b",
                                "embeddings": {"winning": [win], "losing": [lose]}})
            data[f"worker{w}"] = entries
        with (root / f"tldr_embeddings_{split}.pkl").open("wb") as f:
            pickle.dump(data, f)


def write_prism(root: Path, rng: np.random.Generator) -> None:
    directions = rng.standard_normal((2, DIM))
    for split in ("train", "test"):
        rows = []
        for u in range(8):
            for d in range(6):
                win, lose = _signal(rng, directions[u % 2])
                rows.append({"extra_info": {
                    "split": split, "seen": u < 5, "user_id": f"user{u}",
                    "dialog_id": f"{split}-{u}-{d}", "turn_nb": 0,
                    "chosen_conv_embedding": win,
                    "rejected_conv_embedding": torch.stack([lose, _signal(rng, directions[u % 2])[1]]),
                }})
        torch.save(rows, root / f"{split}_embeddings.pkl")


def write_personalllm(root: Path, rng: np.random.Generator) -> None:
    # 1000 train prompts so that the reference's 0.1% few-shot fraction is one prompt
    for split, n in (("train", 1000), ("test", 4)):
        save_file({"embeddings": torch.tensor(rng.standard_normal((8 * n, DIM)),
                                              dtype=torch.bfloat16)}, root / f"{split}.safetensors")
        with (root / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["prompt", *SCORE_COLUMNS])
            for p, scores in enumerate(rng.standard_normal((n, 80)).round(4)):
                writer.writerow([f"prompt {p}", *scores.tolist()])


WRITERS = {"tldr": write_tldr, "prism": write_prism, "personalllm": write_personalllm}


@pytest.mark.parametrize("name", list(WRITERS))
def test_lore_train_on_reference_files(name: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    WRITERS[name](data, rng)
    save_file({"v_ref": torch.tensor(rng.standard_normal(DIM), dtype=torch.float32)},
              data / "v_ref.safetensors")
    out = tmp_path / "run"
    code = main(["--dataset", name, "--data-dir", str(data), "--K", "0", "1", "2",
                 "--steps", "20", "--fewshot-steps", "10", "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["source"] == name
    assert [run["K"] for run in results["runs"]] == [0, 1, 2]
    ref = results["runs"][0]
    assert ref["seen_test"]["n_users"] > 0  # K = 0 ran: v_ref came from the directory


def test_lore_train_reports_a_malformed_file_in_one_line(tmp_path: Path, capsys) -> None:
    write_tldr(tmp_path, np.random.default_rng(0))
    (tmp_path / "tldr_embeddings_val.pkl").write_bytes(b"\x80\x04garbage")
    code = main(["--dataset", "tldr", "--data-dir", str(tmp_path), "--K", "0",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "tldr_embeddings_val.pkl: not a readable pickle" in err and "\n" not in err
