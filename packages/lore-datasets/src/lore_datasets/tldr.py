"""Reddit TL;DR (openai/summarize_from_feedback) from the reference pickles.

Input: ``tldr_embeddings_train.pkl`` and ``tldr_embeddings_val.pkl``, each a
pickled dict worker id -> list of ``{'text', 'winning_summary',
'losing_summary', 'embeddings': {'winning': [tensor], 'losing': [tensor]}}``
(read with the restricted unpickler), plus an optional ``v_ref.safetensors``.
Or, when those pickles are absent, what ``lore-prepare embed --source tldr``
writes: ``train/`` and ``validation/`` in the generic layout (one pair per
judgment, user = worker, prompt id = post id), split the same way.

The split follows ``RedditTLDR/train_basis.py``: per file, drop the workers
with the fewest entries; workers left in both files are shuffled with the
seed and halved (first half seen, second half unseen); a seen worker trains
on at most 150 of its train-file pairs and is tested on all its
validation-file pairs; an unseen worker's few-shot pool is at most 50
train-file pairs, tested on all its validation-file pairs.

Departures from the reference (each fixes a defect of REFERENCE.md §7):
- the shared workers are taken from the *filtered* dicts (the reference
  intersects the unfiltered key sets, so a dropped worker could be drawn and
  then raise KeyError);
- ties in entry count are broken by worker id, and the shared workers are
  sorted by id before the seeded shuffle, so the split does not depend on
  dict order or on Python's hash seed (the reference shuffles ``list(set)``);
- each worker's pairs are drawn from a generator seeded by (seed, worker id),
  so one worker's draw does not depend on the others (the reference draws
  all workers from one global ``random`` stream in dict order);
- chosen - rejected is computed in fp32 (the reference subtracts in bf16);
- everything is keyed by worker id, never by list position.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .generic import load_generic
from .pairs import Benchmark, PreferencePairs
from .reference_files import check_dict, difference, read_v_ref, require_file, text_id, vector
from .safe_pickle import load_untrusted

TRAIN_FILE = "tldr_embeddings_train.pkl"
VAL_FILE = "tldr_embeddings_val.pkl"
ENTRY = "a list of {'text', 'winning_summary', 'losing_summary', 'embeddings': {'winning': [tensor], 'losing': [tensor]}}"


def load_tldr(
    data_dir: str | Path,
    *,
    seed: int = 0,
    seen_train_pairs: int = 150,
    fewshot_pairs: int = 50,
    drop_smallest: int = 2,
    train_file: str = TRAIN_FILE,
    val_file: str = VAL_FILE,
) -> Benchmark:
    """The TL;DR benchmark as the reference splits it (see the module docstring)."""
    data_dir = Path(data_dir)
    pickles = (data_dir / train_file).exists() or (data_dir / val_file).exists()
    if not pickles and (data_dir / "train").is_dir() and (data_dir / "validation").is_dir():
        train, val = _read_generic(data_dir / "train"), _read_generic(data_dir / "validation")
        files = ["train/", "validation/"]
    else:
        what = f"a pickled dict worker id -> {ENTRY} (or train/ and validation/ from lore-prepare)"
        train = _read_pickle(require_file(data_dir / train_file, what))
        val = _read_pickle(require_file(data_dir / val_file, what))
        files = [train_file, val_file]
    train_kept, train_dropped = _drop_smallest(train.workers, drop_smallest)
    val_kept, val_dropped = _drop_smallest(val.workers, drop_smallest)

    shared = sorted(set(train_kept) & set(val_kept))
    if len(shared) < 2:
        raise DataError(
            f"{data_dir}: {len(shared)} workers appear in both {files[0]} and {files[1]} after "
            f"dropping the {drop_smallest} smallest of each; need at least 2"
        )
    random.Random(seed).shuffle(shared)
    half = len(shared) // 2
    seen, unseen = sorted(shared[:half]), sorted(shared[half:])

    def take(workers: list[str], source: _Source, cap: int | None) -> PreferencePairs:
        features, users, prompts = [], [], []
        for worker in workers:
            n = len(source.workers[worker])
            picked = list(range(n))
            if cap is not None and n > cap:
                picked = sorted(random.Random(f"tldr:{seed}:{worker}").sample(picked, cap))
            if not picked:
                continue
            rows, ids = source.rows(worker, picked)
            features.append(rows)
            users += [worker] * len(ids)
            prompts += ids
        return PreferencePairs.from_rows(torch.cat(features), users, prompts, user_ids=workers)

    parts = {
        "seen_train": take(seen, train, seen_train_pairs),
        "seen_test": take(seen, val, None),
        "unseen_fewshot": take(unseen, train, fewshot_pairs),
        "unseen_test": take(unseen, val, None),
    }
    dims = {p.dim for p in parts.values()}
    if len(dims) != 1:
        raise DataError(f"{data_dir}: train and validation embeddings differ in width: {sorted(dims)}")
    dim = dims.pop()
    meta: dict[str, Any] = {
        "source": "tldr",
        "reference": "facebookresearch/LoRe RedditTLDR/train_basis.py",
        "files": files,
        "seed": seed,
        "dim": dim,
        "workers": {"train": len(train.workers), "val": len(val.workers), "shared": len(shared),
                    "seen": len(seen), "unseen": len(unseen)},
        "dropped_smallest": {"train": train_dropped, "val": val_dropped},
        "caps": {"seen_train_pairs": seen_train_pairs, "fewshot_pairs": fewshot_pairs},
        "counts": {name: part.num_pairs for name, part in parts.items()},
    }
    v_ref = read_v_ref(data_dir, dim)
    if v_ref is None and files[0] == "train/":
        v_ref = read_v_ref(data_dir / "train", dim)
    return Benchmark(**parts, v_ref=v_ref, meta=meta)


@dataclass
class _Source:
    """One file's pairs by worker, and how to turn some of them into rows."""

    workers: dict[str, list[Any]]
    rows: Callable[[str, list[int]], tuple[torch.Tensor, list[str]]]


def _read_pickle(path: Path) -> _Source:
    workers = _read(path)

    def rows(worker: str, picked: list[int]) -> tuple[torch.Tensor, list[str]]:
        chosen, rejected, prompts = [], [], []
        for i in picked:
            entry, where = workers[worker][i], f"{path}, worker {worker!r}, entry {i}"
            emb = entry.get("embeddings")
            if not isinstance(emb, dict) or "winning" not in emb or "losing" not in emb:
                raise DataError(
                    f"{where}: expected 'embeddings': {{'winning': [tensor], 'losing': [tensor]}}"
                )
            chosen.append(vector(emb["winning"], f"{where}, 'winning'"))
            rejected.append(vector(emb["losing"], f"{where}, 'losing'"))
            prompts.append(text_id(entry.get("text")))
        return difference(chosen, rejected, None, f"{path}, worker {worker!r}"), prompts

    return _Source(workers, rows)


def _read_generic(directory: Path) -> _Source:
    pairs, _ = load_generic(directory)
    offsets = pairs.offsets.tolist()
    workers = {u: list(range(offsets[i], offsets[i + 1])) for i, u in enumerate(pairs.user_ids)}

    def rows(worker: str, picked: list[int]) -> tuple[torch.Tensor, list[str]]:
        index = [workers[worker][i] for i in picked]
        return pairs.features[index], [pairs.prompt_ids[i] for i in index]

    return _Source(workers, rows)


def _read(path: Path) -> dict[str, list[dict]]:
    raw = check_dict(load_untrusted(path), path, f"a dict worker id -> {ENTRY}")
    out: dict[str, list[dict]] = {}
    for worker, entries in raw.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DataError(f"{path}, worker {worker!r}: expected {ENTRY}")
        key = str(worker)
        if key in out:
            raise DataError(f"{path}: worker id {key!r} appears twice (as different key types)")
        out[key] = entries
    return out


def _drop_smallest(data: dict[str, list], k: int) -> tuple[dict[str, list], list[str]]:
    """Drop the k workers with the fewest entries (ties: smaller id first)."""
    order = sorted(data, key=lambda w: (len(data[w]), w))
    dropped = order[:k]
    return {w: data[w] for w in order[k:]}, sorted(dropped)
