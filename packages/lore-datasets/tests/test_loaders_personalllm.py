"""PersonalLLM loader: safetensors embeddings + reward-score tables, simulated users."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lore_datasets.errors import DataError
from lore_datasets.personalllm import (
    MODELS,
    SCORE_COLUMNS,
    load_personalllm,
    simulated_user_weights,
)

DIM = 4
PROMPTS = {"train": 200, "test": 12}
SMALL = {"num_seen": 6, "num_unseen": 4, "seen_train_frac": 0.05, "fewshot_frac": 0.02}


def write_personalllm(directory: Path, fmt: str = "csv", missing: tuple[str, int, str] | None = None):
    """Embeddings [8P, d] bf16 + a score table with text columns that need CSV quoting."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    for split, n in PROMPTS.items():
        emb = torch.from_numpy(rng.standard_normal((8 * n, DIM))).to(torch.bfloat16)
        save_file({"embeddings": emb}, directory / f"{split}.safetensors")
        scores = rng.standard_normal((n, 80))
        table = {"prompt": [f'prompt {p}, with "quotes"\nand a newline' for p in range(n)]}
        table.update({c: scores[:, j].tolist() for j, c in enumerate(SCORE_COLUMNS)})
        if missing and missing[0] == split:
            table[missing[2]][missing[1]] = None
            scores[missing[1], SCORE_COLUMNS.index(missing[2])] = np.nan
        if fmt == "csv":
            with (directory / f"{split}.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(list(table))
                for row in zip(*table.values()):
                    writer.writerow(["" if v is None else v for v in row])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(table), directory / f"{split}.parquet")
        out[split] = (emb, scores.reshape(n, 8, 10))
    return out


def _check_pairs(bench, data, weights_by_user: dict[str, np.ndarray]) -> None:
    """Each row is emb[best] - emb[worst] of its prompt under its user's own mixture."""
    for name in ("seen_train", "seen_test", "unseen_fewshot", "unseen_test"):
        part = bench.split(name)
        users = part.user.tolist()
        for row, prompt in enumerate(part.prompt_ids):
            split, p = prompt.split(":")
            emb, scores = data[split]
            mixed = scores[int(p)] @ weights_by_user[part.user_ids[users[row]]]
            best, worst = int(mixed.argmax()), int(mixed.argmin())
            expected = emb[8 * int(p) + best].float() - emb[8 * int(p) + worst].float()
            torch.testing.assert_close(part.features[row], expected, rtol=0, atol=0)


def test_simulated_users_pick_best_versus_worst(tmp_path: Path) -> None:
    data = write_personalllm(tmp_path)
    bench = load_personalllm(tmp_path, seed=3, **SMALL)
    weights = simulated_user_weights(3, 10)
    np.testing.assert_allclose(weights.sum(1), 1.0)
    ids = [f"seen_{i}" for i in range(6)] + [f"unseen_{i}" for i in range(4)]
    _check_pairs(bench, data, dict(zip(ids, weights)))
    assert bench.seen_train.pairs_per_user().tolist() == [10] * 6  # int(0.05 * 200)
    assert bench.unseen_fewshot.pairs_per_user().tolist() == [4] * 4
    assert bench.seen_test.pairs_per_user().tolist() == [12] * 6  # all test prompts
    # each user's train prompts are distinct, and test prompts come from the test split only
    offsets = bench.seen_train.offsets.tolist()
    for u in range(6):
        assert len(set(bench.seen_train.prompt_ids[offsets[u]:offsets[u + 1]])) == 10
    assert all(p.startswith("test:") for p in bench.unseen_test.prompt_ids)
    assert bench.meta["population"]["models"] == list(MODELS)
    assert bench.v_ref is None


def test_seeded(tmp_path: Path) -> None:
    write_personalllm(tmp_path)
    a = load_personalllm(tmp_path, seed=1, **SMALL)
    b = load_personalllm(tmp_path, seed=1, **SMALL)
    c = load_personalllm(tmp_path, seed=2, **SMALL)
    assert a.seen_train.prompt_ids == b.seen_train.prompt_ids
    assert torch.equal(a.seen_train.features, b.seen_train.features)
    assert a.seen_train.prompt_ids != c.seen_train.prompt_ids
    # a user's draw depends on its own key only: more unseen users leave seen users unchanged
    d = load_personalllm(tmp_path, seed=1, **{**SMALL, "num_unseen": 9})
    assert d.seen_train.prompt_ids == a.seen_train.prompt_ids


def test_parquet_matches_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    data = write_personalllm(tmp_path / "pq", fmt="parquet")
    write_personalllm(tmp_path / "csv")
    a = load_personalllm(tmp_path / "pq", **SMALL)
    b = load_personalllm(tmp_path / "csv", **SMALL)
    assert a.seen_train.prompt_ids == b.seen_train.prompt_ids
    assert torch.equal(a.seen_test.features, b.seen_test.features)
    assert data["train"][0].shape == (1600, DIM)


def test_missing_score_leaves_the_prompt_out(tmp_path: Path) -> None:
    write_personalllm(tmp_path, missing=("test", 5, "response_3_beaver_7b"))
    bench = load_personalllm(tmp_path, **SMALL)
    assert bench.meta["prompts_missing_scores"] == {"train": 0, "test": 1}
    assert "test:5" not in bench.seen_test.prompt_ids
    assert bench.seen_test.pairs_per_user().tolist() == [11] * 6


def test_bf16_storage_after_fp32_subtraction(tmp_path: Path) -> None:
    write_personalllm(tmp_path)
    a = load_personalllm(tmp_path, **SMALL)
    b = load_personalllm(tmp_path, dtype=torch.bfloat16, **SMALL)
    assert b.seen_test.features.dtype == torch.bfloat16
    assert torch.equal(b.seen_test.features, a.seen_test.features.to(torch.bfloat16))


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.safetensors: file not found"):
        load_personalllm(tmp_path, **SMALL)
    write_personalllm(tmp_path)
    with pytest.raises(DataError, match=r"no prompt per user; raise the fraction"):
        load_personalllm(tmp_path, **{**SMALL, "fewshot_frac": 0.001})
    save_file({"embeddings": torch.zeros(8 * 13, DIM)}, tmp_path / "test.safetensors")
    with pytest.raises(DataError, match=r"test\.csv: 12 prompts but test\.safetensors has 104 rows"):
        load_personalllm(tmp_path, **SMALL)
    save_file({"emb": torch.zeros(8, DIM)}, tmp_path / "test.safetensors")
    with pytest.raises(DataError, match=r"test\.safetensors: no tensor 'embeddings'"):
        load_personalllm(tmp_path, **SMALL)
    write_personalllm(tmp_path)
    with (tmp_path / "train.csv").open("w") as f:
        f.write("prompt,response_1_gemma_2b\nx,1.0\n")
    with pytest.raises(DataError, match=r"train\.csv: missing 79 reward column"):
        load_personalllm(tmp_path, **SMALL)


def test_table_with_bom_crlf_reads_and_duplicate_columns_fail(tmp_path: Path) -> None:
    write_personalllm(tmp_path)
    plain = load_personalllm(tmp_path, **SMALL)
    text = (tmp_path / "train.csv").read_text().replace("\n", "\r\n")
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    again = load_personalllm(tmp_path, **SMALL)
    assert torch.equal(again.seen_train.features, plain.seen_train.features)
    header, rest = (tmp_path / "test.csv").read_text().split("\n", 1)
    (tmp_path / "test.csv").write_text(header.replace("prompt", "response_1_gemma_2b", 1) + "\n" + rest)
    with pytest.raises(DataError, match=r"test\.csv, line 1: column 'response_1_gemma_2b' appears"):
        load_personalllm(tmp_path, **SMALL)
