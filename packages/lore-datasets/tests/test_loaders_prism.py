"""PRISM loader on tiny files in both reference forms (nested dicts, per-turn rows)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lore_datasets.errors import DataError
from lore_datasets.prism import load_prism

DIM = 5


def _vec(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(DIM, generator=gen).to(torch.bfloat16)


def write_nested(directory: Path, users: int = 7, extra_train_only: bool = True) -> dict:
    """user -> dialog -> {'chosen': [...], 'rejected': [...]}, one entry per (turn, rejected)."""
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    files = {"train": {}, "test": {}}
    for u in range(users):
        for split in files:
            dialogs = {}
            for d in range(2 + u % 3):
                n = 1 + (u + d) % 3  # pairs in this dialog
                dialogs[f"{split}-d{u}-{d}"] = {
                    "chosen": [_vec(gen)] * n,
                    "rejected": [_vec(gen) for _ in range(n)],
                }
            files[split][f"user{u}"] = dialogs
    if extra_train_only:
        files["train"]["lonely"] = {"dx": {"chosen": [_vec(gen)], "rejected": [_vec(gen)]}}
    torch.save(files["train"], directory / "prism_train_embeddings_50.pt")
    torch.save(files["test"], directory / "prism_test_embeddings_50.pt")
    return files


def _diffs(dialogs: dict) -> dict[str, list[torch.Tensor]]:
    return {d: sorted((c.float() - r.float()).tolist() for c, r in zip(e["chosen"], e["rejected"]))
            for d, e in dialogs.items()}


def test_nested_form_splits_users_and_pairs(tmp_path: Path) -> None:
    files = write_nested(tmp_path)
    bench = load_prism(tmp_path, seed=0)
    assert bench.meta["form"] == "nested"
    seen, unseen = bench.seen_train.user_ids, bench.unseen_test.user_ids
    assert len(unseen) == math.ceil(7 / 2) and len(seen) == 3
    assert set(seen) | set(unseen) == {f"user{u}" for u in range(7)}
    assert bench.meta["users"]["left_out_in_one_file_only"] == ["lonely"]
    for name, split in (("seen_train", "train"), ("seen_test", "test"),
                        ("unseen_fewshot", "train"), ("unseen_test", "test")):
        part = bench.split(name)
        offsets = part.offsets.tolist()
        for u, user in enumerate(part.user_ids):
            rows = range(offsets[u], offsets[u + 1])
            got: dict[str, list] = {}
            for r in rows:
                got.setdefault(part.prompt_ids[r], []).append(part.features[r].tolist())
            assert {d: sorted(v) for d, v in got.items()} == _diffs(files[split][user])
    # test prompts (dialogs) are disjoint from training prompts
    assert not set(bench.seen_train.prompt_ids) & set(bench.seen_test.prompt_ids)
    again = load_prism(tmp_path, seed=0)
    assert again.seen_train.user_ids == seen
    assert load_prism(tmp_path, seed=5).seen_train.user_ids != seen


def test_fewshot_dialogs_samples_whole_dialogs(tmp_path: Path) -> None:
    files = write_nested(tmp_path)
    bench = load_prism(tmp_path, fewshot_dialogs=1)
    part = bench.unseen_fewshot
    offsets = part.offsets.tolist()
    for u, user in enumerate(part.user_ids):
        dialogs = set(part.prompt_ids[offsets[u]:offsets[u + 1]])
        assert len(dialogs) == 1
        (dialog,) = dialogs
        assert offsets[u + 1] - offsets[u] == len(files["train"][user][dialog]["rejected"])
    full = load_prism(tmp_path)
    assert torch.equal(full.unseen_test.features, bench.unseen_test.features)
    with pytest.raises(DataError, match="fewshot_dialogs"):
        load_prism(tmp_path, fewshot_dialogs=0)


def _row(user: str, seen: bool, split: str, dialog: str, turn: int, chosen, rejected) -> dict:
    return {
        "data_source": "prism",
        "prompt": [{"role": "user", "content": "hi"}],
        "ability": "alignment",
        "reward_model": {"style": "model", "ground_truth": ""},
        "extra_info": {
            "split": split, "seen": seen, "user_id": user, "dialog_id": dialog, "turn_nb": turn,
            "total_turn_nb": 2, "chosen_utterance": "c", "rejected_utterance": ["r1", "r2"],
            "chosen_conv_embedding": chosen, "rejected_conv_embedding": rejected,
        },
    }


def write_rows(directory: Path, stacked_rejected: bool) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(2)
    rows: dict[str, list] = {"train": [], "test": []}
    users = {"a": True, "b": True, "c": False, "d": False}
    for split in rows:
        for user, seen in users.items():
            for d in range(2):
                for turn in range(2):
                    rejected = (torch.stack([_vec(gen), _vec(gen)]) if stacked_rejected
                                else _vec(gen))
                    rows[split].append(_row(user, seen, split, f"{split}-{user}-{d}", turn,
                                            _vec(gen), rejected))
    torch.save(rows["train"], directory / "train_embeddings.pkl")
    torch.save(rows["test"], directory / "test_embeddings.pkl")
    return rows


@pytest.mark.parametrize("stacked", [True, False])
def test_row_form(tmp_path: Path, stacked: bool) -> None:
    rows = write_rows(tmp_path, stacked)
    bench = load_prism(tmp_path)
    assert bench.meta["form"] == "rows"
    assert bench.seen_train.user_ids == ["a", "b"]
    assert bench.unseen_fewshot.user_ids == ["c", "d"]
    per_row = 2 if stacked else 1
    for name in ("seen_train", "seen_test", "unseen_fewshot", "unseen_test"):
        assert bench.split(name).pairs_per_user().tolist() == [4 * per_row] * 2
    info = rows["train"][0]["extra_info"]
    rejected = info["rejected_conv_embedding"]
    expected = info["chosen_conv_embedding"].float() - rejected.float()
    first = bench.seen_train.features[:per_row]
    torch.testing.assert_close(first, expected.reshape(per_row, DIM), rtol=0, atol=0)
    if stacked:
        assert bench.meta["warnings"] == []
    else:
        assert "leaks the label" in bench.meta["warnings"][0]


def test_row_form_errors(tmp_path: Path) -> None:
    rows = write_rows(tmp_path, True)
    rows["test"][3]["extra_info"]["seen"] = False  # user a was seen
    torch.save(rows["test"], tmp_path / "test_embeddings.pkl")
    with pytest.raises(DataError, match=r"test_embeddings\.pkl, row 3: user 'a' is seen=False"):
        load_prism(tmp_path)
    rows["test"][3]["extra_info"]["seen"] = True
    del rows["test"][5]["extra_info"]["dialog_id"]
    torch.save(rows["test"], tmp_path / "test_embeddings.pkl")
    with pytest.raises(DataError, match=r"row 5: 'extra_info' lacks \['dialog_id'\]"):
        load_prism(tmp_path)


def test_missing_files_and_form_choice(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no PRISM embedding files"):
        load_prism(tmp_path)
    write_nested(tmp_path)
    write_rows(tmp_path, True)
    with pytest.raises(DataError, match="several forms"):
        load_prism(tmp_path)
    assert load_prism(tmp_path, form="rows").meta["form"] == "rows"
    (tmp_path / "train_embeddings.pkl").unlink()
    with pytest.raises(DataError, match=r"train_embeddings\.pkl: file not found"):
        load_prism(tmp_path, form="rows")
