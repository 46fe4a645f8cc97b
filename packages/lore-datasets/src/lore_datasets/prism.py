"""PRISM (HannahRoseKirk/prism-alignment) from either reference embedding file.

Two forms, picked by the files in ``data_dir`` (or ``form=``):

- ``nested`` (the initial commit b5cf508, the paper-era pipeline):
  ``prism_train_embeddings_50.pt`` and ``prism_test_embeddings_50.pt``, each
  user id -> dialog id -> ``{'chosen': [tensor], 'rejected': [tensor]}``
  with one entry per (turn, rejected response). Users present in both files
  are shuffled with the seed and cut in two (``ceil(n/2)`` unseen, as
  sklearn's ``train_test_split(test_size=0.5)``): seen users train on their
  train-file dialogs and are tested on their test-file dialogs; unseen users
  get their train-file dialogs as the few-shot pool.
- ``rows`` (HEAD): ``train_embeddings.pkl`` and ``test_embeddings.pkl``, each a
  ``torch.save``'d list of rows whose ``extra_info`` carries ``user_id``,
  ``seen``, ``split``, ``dialog_id`` and ``chosen_conv_embedding`` /
  ``rejected_conv_embedding``. Seen/unseen and train/test come from the rows.
- ``generic``: what ``lore-prepare embed --source prism`` writes (the generic
  layout, one pair per (turn, rejected), prompt id = conversation id). The
  split is HEAD ``prepare.py``'s: users shuffled with the seed, the first 80%
  seen candidates and the rest unseen, only users with more than 5 dialogs
  kept, and each kept user's dialogs shuffled and halved (first
  ``int(n/2)`` train).

One pair per (turn, rejected response): a row whose rejected embedding is a
[R, d] tensor or a list of R vectors gives R pairs. Prompt ids are dialog ids,
so test prompts are disjoint from training prompts (dialogs were split 50/50).

Departures from the reference:
- files are read with the restricted unpickler, never ``torch.load``;
- HEAD's rows carry one rejected embedding per turn, made from the Python
  repr of the *list* of rejected texts, which leaks the label (REFERENCE.md
  §7.2, issues #2/#8): such files still load, one pair per turn, and
  ``meta['warnings']`` says so; re-embed with ``lore-prepare`` to fix it;
- users are keyed by id (the reference aligns users by a shared sort order);
  a user found in only one nested file is left out and listed in meta;
- users are sorted by id before the seeded shuffle (the reference's
  ``train_test_split`` had no fixed random_state);
- ``fewshot_dialogs=k`` samples k train-file dialogs per unseen user
  (seeded per user) instead of the reference's whole half of their dialogs
  (§7.11); the default ``None`` keeps the reference behaviour;
- chosen - rejected is computed in fp32;
- in the generic form, users are sorted before the seeded shuffle and each
  user's dialogs are shuffled by a generator keyed by (seed, user) (the
  reference draws everything from one numpy stream seeded 123).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .generic import load_generic
from .pairs import Benchmark, PreferencePairs
from .reference_files import check_dict, difference, read_v_ref, vector
from .safe_pickle import load_untrusted

NESTED_FILES = ("prism_train_embeddings_50.pt", "prism_test_embeddings_50.pt")
ROW_FILES = ("train_embeddings.pkl", "test_embeddings.pkl")
NESTED = "a dict user id -> dialog id -> {'chosen': [tensor], 'rejected': [tensor]}"
ROWS = ("a list of rows whose 'extra_info' has user_id, seen, split, dialog_id, "
        "chosen_conv_embedding, rejected_conv_embedding")


# Pairs by user: user -> list of (dialog id, chosen - rejected rows [n, d] in fp32).
_Pairs = dict[str, list[tuple[str, torch.Tensor]]]


def load_prism(
    data_dir: str | Path,
    *,
    seed: int = 0,
    form: str = "auto",
    fewshot_dialogs: int | None = None,
) -> Benchmark:
    """The PRISM benchmark from the nested or the per-turn reference files."""
    data_dir = Path(data_dir)
    form = _pick_form(data_dir, form)
    warnings: list[str] = []
    if form == "nested":
        groups, seen, unseen, info = _nested(data_dir, seed)
    elif form == "generic":
        groups, seen, unseen, info = _generic(data_dir, seed)
    else:
        groups, seen, unseen, info = _rows(data_dir, warnings)
    if not seen or not unseen:
        raise DataError(f"{data_dir}: need both seen and unseen users, got {len(seen)} seen "
                        f"and {len(unseen)} unseen")
    if fewshot_dialogs is not None:
        if fewshot_dialogs < 1:
            raise DataError(f"fewshot_dialogs must be >= 1 or None, got {fewshot_dialogs}")
        groups["unseen_fewshot"] = _sample_dialogs(groups["unseen_fewshot"], fewshot_dialogs, seed)

    users = {"seen_train": seen, "seen_test": seen, "unseen_fewshot": unseen, "unseen_test": unseen}
    parts = {name: _pack(groups[name], users[name], f"{data_dir} ({name})") for name in users}
    dims = {p.dim for p in parts.values() if p.num_pairs}
    if len(dims) != 1:
        raise DataError(f"{data_dir}: PRISM embeddings of different widths {sorted(dims)}")
    dim = dims.pop()
    for name, part in parts.items():
        if part.num_pairs == 0:
            parts[name] = PreferencePairs(torch.empty(0, dim), part.user, part.user_ids, [])
    meta: dict[str, Any] = {
        "source": "prism",
        "form": form,
        "reference": "facebookresearch/LoRe PRISM "
        + ("train_basis.py @ b5cf508" if form == "nested" else "prepare.py/train_basis.py @ HEAD"),
        "files": list({"nested": NESTED_FILES, "rows": ROW_FILES,
                       "generic": ("comparisons.csv", "responses.jsonl", "embeddings.npy")}[form]),
        "seed": seed,
        "dim": dim,
        "fewshot_dialogs": fewshot_dialogs,
        "users": {"seen": len(seen), "unseen": len(unseen), **info},
        "counts": {name: part.num_pairs for name, part in parts.items()},
        "warnings": warnings,
    }
    return Benchmark(**parts, v_ref=read_v_ref(data_dir, dim), meta=meta)


def _pick_form(data_dir: Path, form: str) -> str:
    have = {
        "nested": all((data_dir / f).is_file() for f in NESTED_FILES),
        "rows": all((data_dir / f).is_file() for f in ROW_FILES),
        "generic": (data_dir / "responses.jsonl").is_file() and any(
            (data_dir / f).is_file() for f in ("comparisons.csv", "comparisons.csv.gz")),
    }
    if form in have:
        if not have[form] and form != "generic":  # load_generic names the missing file itself
            files = NESTED_FILES if form == "nested" else ROW_FILES
            missing = next(f for f in files if not (data_dir / f).is_file())
            raise DataError(f"{data_dir / missing}: file not found (expected "
                            f"{NESTED if form == 'nested' else ROWS})")
        return form
    if form != "auto":
        raise DataError(f"form must be 'auto', 'nested', 'rows' or 'generic', got {form!r}")
    found = [f for f, ok in have.items() if ok]
    if len(found) > 1:
        raise DataError(f"{data_dir}: holds PRISM files of several forms ({', '.join(found)}); "
                        "pass form='nested', form='rows' or form='generic'")
    if not found:
        raise DataError(
            f"{data_dir}: no PRISM embedding files: expected {' + '.join(NESTED_FILES)} "
            f"({NESTED}), {' + '.join(ROW_FILES)} ({ROWS}), or the generic layout "
            "written by lore-prepare"
        )
    return found[0]


# -- nested form (b5cf508) ---------------------------------------------------
def _nested(data_dir: Path, seed: int):
    train = _read_nested(data_dir / NESTED_FILES[0])
    test = _read_nested(data_dir / NESTED_FILES[1])
    both = sorted(set(train) & set(test))
    only = sorted(set(train) ^ set(test))
    random.Random(seed).shuffle(both)
    n_unseen = math.ceil(len(both) / 2)
    seen, unseen = sorted(both[: len(both) - n_unseen]), sorted(both[len(both) - n_unseen:])
    groups = {
        "seen_train": {u: train[u] for u in seen},
        "seen_test": {u: test[u] for u in seen},
        "unseen_fewshot": {u: train[u] for u in unseen},
        "unseen_test": {u: test[u] for u in unseen},
    }
    info = {"in_both_files": len(both), "left_out_in_one_file_only": only}
    return groups, seen, unseen, info


def _read_nested(path: Path) -> _Pairs:
    raw = check_dict(load_untrusted(path), path, NESTED)
    out: _Pairs = {}
    for user, dialogs in raw.items():
        if not isinstance(dialogs, dict):
            raise DataError(f"{path}, user {user!r}: expected a dict dialog id -> "
                            "{'chosen': [tensor], 'rejected': [tensor]}")
        items = []
        for dialog, entry in dialogs.items():
            where = f"{path}, user {user!r}, dialog {dialog!r}"
            if not isinstance(entry, dict) or "chosen" not in entry or "rejected" not in entry:
                raise DataError(f"{where}: expected {{'chosen': [tensor], 'rejected': [tensor]}}")
            chosen = _vectors(entry["chosen"], f"{where}, 'chosen'")
            rejected = _vectors(entry["rejected"], f"{where}, 'rejected'")
            if len(chosen) == 1 and len(rejected) > 1:
                chosen = chosen * len(rejected)
            if len(chosen) != len(rejected):
                raise DataError(f"{where}: {len(chosen)} chosen but {len(rejected)} rejected "
                                "embeddings (one pair per entry)")
            items.append((str(dialog), difference(chosen, rejected, None, where)))
        out[str(user)] = items
    return out


# -- generic layout from lore-prepare -----------------------------------------
def _generic(data_dir: Path, seed: int, seen_fraction: float = 0.8, min_dialogs: int = 6):
    pairs, _ = load_generic(data_dir)
    offsets = pairs.offsets.tolist()
    dialogs: dict[str, dict[str, list[int]]] = {}
    for u, user in enumerate(pairs.user_ids):
        for row in range(offsets[u], offsets[u + 1]):
            dialogs.setdefault(user, {}).setdefault(pairs.prompt_ids[row], []).append(row)
    users = sorted(dialogs)
    random.Random(seed).shuffle(users)
    cut = int(seen_fraction * len(users))
    kept = {u for u in users if len(dialogs[u]) >= min_dialogs}
    seen, unseen = sorted(kept & set(users[:cut])), sorted(kept & set(users[cut:]))
    groups: dict[str, _Pairs] = {k: {} for k in
                                 ("seen_train", "seen_test", "unseen_fewshot", "unseen_test")}
    for user in sorted(kept):
        order = sorted(dialogs[user])
        random.Random(f"prism:{seed}:{user}:dialogs").shuffle(order)
        half = len(order) // 2
        prefix = "seen_" if user in seen else "unseen_"
        for i, dialog in enumerate(order):
            part = prefix + (("train" if prefix == "seen_" else "fewshot") if i < half else "test")
            rows = dialogs[user][dialog]
            groups[part].setdefault(user, []).append((dialog, pairs.features[rows]))
    info = {"in_source": len(users), "left_out_fewer_than_6_dialogs": len(users) - len(kept)}
    return groups, seen, unseen, info


# -- per-turn rows (HEAD) ----------------------------------------------------
def _rows(data_dir: Path, warnings: list[str]):
    groups: dict[str, _Pairs] = {k: defaultdict(list) for k in
                                 ("seen_train", "seen_test", "unseen_fewshot", "unseen_test")}
    seen_flag: dict[str, tuple[bool, str]] = {}
    single_rejected = 0
    for file_split, name in (("train", ROW_FILES[0]), ("test", ROW_FILES[1])):
        path = data_dir / name
        rows = load_untrusted(path)
        if not isinstance(rows, list) or not rows:
            raise DataError(f"{path}: expected {ROWS}, got "
                            f"{'an empty list' if rows == [] else type(rows).__name__}")
        for i, row in enumerate(rows):
            where = f"{path}, row {i}"
            info = row.get("extra_info", row) if isinstance(row, dict) else None
            if not isinstance(info, dict):
                raise DataError(f"{where}: expected a dict with 'extra_info'")
            missing = [k for k in ("user_id", "seen", "split", "dialog_id",
                                   "chosen_conv_embedding", "rejected_conv_embedding") if k not in info]
            if missing:
                raise DataError(f"{where}: 'extra_info' lacks {missing}")
            user = str(info["user_id"])
            if str(info["split"]) != file_split:
                raise DataError(f"{where} (user {user!r}): split {info['split']!r} in the "
                                f"{file_split} file")
            seen = bool(info["seen"])
            if user in seen_flag and seen_flag[user][0] != seen:
                raise DataError(f"{where}: user {user!r} is seen={seen} here but "
                                f"seen={seen_flag[user][0]} in {seen_flag[user][1]}")
            seen_flag.setdefault(user, (seen, where))
            chosen = [vector(info["chosen_conv_embedding"], f"{where}, chosen_conv_embedding")]
            rejected = _vectors(info["rejected_conv_embedding"], f"{where}, rejected_conv_embedding")
            single_rejected += len(rejected) == 1
            kind = ("seen_" if seen else "unseen_") + (
                ("train" if seen else "fewshot") if file_split == "train" else "test")
            groups[kind][user].append(
                (str(info["dialog_id"]), difference(chosen * len(rejected), rejected, None, where))
            )
    if single_rejected:
        warnings.append(
            f"{single_rejected} rows carry one rejected embedding per turn; in the reference HEAD "
            "files it embeds the list of all rejected texts, which leaks the label "
            "(REFERENCE.md §7.2): re-embed with lore-prepare for one pair per rejected response"
        )
    seen = sorted(u for u, (s, _) in seen_flag.items() if s)
    unseen = sorted(u for u, (s, _) in seen_flag.items() if not s)
    missing = {k: sorted(set(seen if k.startswith("seen") else unseen) - set(g))
               for k, g in groups.items()}
    info = {f"without_{k}_pairs": len(v) for k, v in missing.items()}
    return {k: dict(g) for k, g in groups.items()}, seen, unseen, info


# -- shared --------------------------------------------------------------------
def _vectors(value: Any, where: str) -> list[torch.Tensor]:
    """A list of 1-D embeddings from a list of vectors, a [R, d] tensor or one vector."""
    if isinstance(value, torch.Tensor) and value.ndim == 2:
        return [vector(v, where) for v in value]
    if isinstance(value, (list, tuple)):
        if not value:
            raise DataError(f"{where}: empty list of embeddings")
        return [vector(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return [vector(value, where)]


def _sample_dialogs(groups: _Pairs, k: int, seed: int) -> _Pairs:
    out: _Pairs = {}
    for user, items in groups.items():
        dialogs = sorted({d for d, _ in items})
        if len(dialogs) > k:
            dialogs = random.Random(f"prism:{seed}:{user}").sample(dialogs, k)
        keep = set(dialogs)
        out[user] = [item for item in items if item[0] in keep]
    return out


def _pack(groups: _Pairs, users: list[str], where: str) -> PreferencePairs:
    blocks, row_users, prompts = [], [], []
    for user in users:
        for dialog, rows in groups.get(user, []):
            blocks.append(rows)
            row_users += [user] * rows.shape[0]
            prompts += [dialog] * rows.shape[0]
    widths = {b.shape[1] for b in blocks}
    if len(widths) > 1:
        raise DataError(f"{where}: embeddings of different widths {sorted(widths)}")
    features = torch.cat(blocks) if blocks else torch.empty(0, 0)
    return PreferencePairs.from_rows(features, row_users, prompts, user_ids=users)
