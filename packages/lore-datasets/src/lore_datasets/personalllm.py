"""PersonalLLM (namkoong-lab/PersonalLLM) with simulated users, as the reference does.

Input, per split (``train``, ``test``):
- ``{split}.safetensors`` with key ``embeddings``: [8 P, d], row 8 p + i is
  response i + 1 of prompt p (what ``PersonalLLM/prepare.py`` writes);
- ``{split}.parquet`` or ``{split}.csv``: P rows in the same prompt order,
  with the 80 reward columns ``response_{i}_{model}`` (i = 1..8, the 10
  models in ``MODELS``); other columns are ignored. Parquet needs pyarrow.

Scores: each column is a reward model's raw output, and the scales differ
widely between models, so a raw Dirichlet mix is dominated by the models
with the largest spread. ``normalize="zscore"`` standardizes each reward
model's scores (mean 0, std 1 over all responses of all prompts of the
split) before mixing, as PersonalLLM's own persona code does;
``normalize="none"`` (the default) mixes the raw scores as the LoRe
reference does. ``beaver_7b`` is PKU-Alignment/beaver-7b-v1.0-cost, a *cost*
model: higher means more harmful, the opposite sign of the other nine.
PersonalLLM's columns keep its raw logit and the reference mixes it as it is
(a user weighting it prefers costlier responses); ``cost_sign="flip"``
negates it so that every column reads "higher is better". Both settings
default to what ``scores.json`` in the data directory says (written by
``lore-prepare embed --source personalllm --normalize ... --cost-sign ...``),
else to the reference's.

Users are Dirichlet(alpha = 0.1) mixtures of the 10 reward models:
``num_seen`` seen and ``num_unseen`` unseen. A user's pair for a prompt is
its best response (highest mixed score) against its worst. Each seen user
trains on ``int(seen_train_frac * P_train)`` sampled train prompts and is
tested on ``int(seen_test_frac * P_test)`` test prompts; unseen users likewise
with ``fewshot_frac`` and ``unseen_test_frac``. Defaults are the reference's
(0.005, 1.0, 0.001, 1.0). Memory: the test splits hold users x P_test rows
of width d (``dtype`` may be bf16 to halve it; the subtraction is fp32).

Departures from the reference (REFERENCE.md §3.4, §7):
- the population is seeded (``numpy.random.default_rng``; the reference has
  no seed); weights come from one stream, each user's prompts from a stream
  keyed by (seed, user index), so a user's draw does not depend on the others;
- prompts are sampled first and only their two rows are gathered (the
  reference builds the dense users x prompts x d tensor);
- chosen - rejected is computed in fp32 (the reference subtracts in bf16);
- a prompt with a missing score is left out of sampling for everyone and
  counted in meta (the reference keeps ``None`` in an object array, §7.7);
- a prompt where a user's best and worst responses score the same (all
  eight equal under that user's weights) gives no preference and is dropped,
  counted in meta.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .pairs import Benchmark, PreferencePairs
from .reference_files import read_safetensors, read_v_ref
from .runtime.outputs import atomic_write_text
from .textio import csv_rows, read_json

MODELS = (
    "gemma_2b", "gemma_7b", "mistral_raft", "llama3_sfairx", "oasst_deberta_v3",
    "beaver_7b", "oasst_pythia_7b", "oasst_pythia_1b", "mistral_ray", "mistral_weqweasdas",
)
RESPONSES = 8
SCORE_COLUMNS = tuple(f"response_{i}_{m}" for i in range(1, RESPONSES + 1) for m in MODELS)
COST_MODEL = "beaver_7b"
SETTINGS_FILE = "scores.json"
NORMALIZE = ("none", "zscore")
COST_SIGN = ("raw", "flip")
_CHUNK = 1 << 14


def load_personalllm(
    data_dir: str | Path,
    *,
    seed: int = 0,
    num_seen: int = 1000,
    num_unseen: int = 500,
    alpha: float = 0.1,
    seen_train_frac: float = 0.005,
    seen_test_frac: float = 1.0,
    fewshot_frac: float = 0.001,
    unseen_test_frac: float = 1.0,
    dtype: torch.dtype = torch.float32,
    normalize: str | None = None,
    cost_sign: str | None = None,
) -> Benchmark:
    """Simulated-user PersonalLLM benchmark (see the module docstring)."""
    data_dir = Path(data_dir)
    if num_seen < 1 or num_unseen < 1:
        raise DataError(f"need at least one seen and one unseen user, got {num_seen}, {num_unseen}")
    normalize, cost_sign = _score_settings(data_dir, normalize, cost_sign)
    splits = {s: _read_split(data_dir, s) for s in ("train", "test")}
    for name, (emb, scores, valid) in splits.items():
        splits[name] = (emb, _adjust(scores, valid, normalize, cost_sign), valid)
    dim = splits["train"][0].shape[1]
    if splits["test"][0].shape[1] != dim:
        raise DataError(f"{data_dir}: train embeddings have width {dim}, test "
                        f"{splits['test'][0].shape[1]}")

    weights = simulated_user_weights(seed, num_seen + num_unseen, alpha)
    seen_ids = [f"seen_{i}" for i in range(num_seen)]
    unseen_ids = [f"unseen_{i}" for i in range(num_unseen)]
    plan = {
        "seen_train": ("train", seen_ids, 0, seen_train_frac),
        "seen_test": ("test", seen_ids, 0, seen_test_frac),
        "unseen_fewshot": ("train", unseen_ids, num_seen, fewshot_frac),
        "unseen_test": ("test", unseen_ids, num_seen, unseen_test_frac),
    }
    parts: dict[str, PreferencePairs] = {}
    dropped_ties: dict[str, int] = {}
    for stream, (name, (split, ids, first, frac)) in enumerate(plan.items(), start=1):
        emb, scores, valid = splits[split]
        per_user = _per_user(frac, valid.size, name, split)
        parts[name], dropped_ties[name] = _simulate(
            emb, scores, valid, weights[first:first + len(ids)], ids, per_user,
            (seed, stream, first), split, dtype,
        )
    meta: dict[str, Any] = {
        "source": "personalllm",
        "reference": "facebookresearch/LoRe PersonalLLM/train_basis.py",
        "seed": seed,
        "dim": dim,
        "population": {"alpha": alpha, "models": list(MODELS), "num_seen": num_seen,
                       "num_unseen": num_unseen},
        "scores": {"normalize": normalize, "cost_sign": cost_sign, "cost_model": COST_MODEL},
        "fractions": {"seen_train": seen_train_frac, "seen_test": seen_test_frac,
                      "unseen_fewshot": fewshot_frac, "unseen_test": unseen_test_frac},
        "prompts": {s: int(v[0].shape[0] // RESPONSES) for s, v in splits.items()},
        "prompts_missing_scores": {s: int(v[0].shape[0] // RESPONSES - v[2].size)
                                   for s, v in splits.items()},
        "pairs_dropped_all_scores_equal": dropped_ties,
        "counts": {name: part.num_pairs for name, part in parts.items()},
    }
    return Benchmark(**parts, v_ref=read_v_ref(data_dir, dim), meta=meta)


def write_score_settings(data_dir: str | Path, *, normalize: str = "none",
                         cost_sign: str = "raw") -> Path:
    """Record how the scores of ``data_dir`` are to be mixed (read by ``load_personalllm``)."""
    _check_settings(normalize, cost_sign)
    path = Path(data_dir) / SETTINGS_FILE
    atomic_write_text(path, json.dumps({"normalize": normalize, "cost_sign": cost_sign}) + "\n")
    return path


def _check_settings(normalize: str, cost_sign: str) -> None:
    if normalize not in NORMALIZE:
        raise DataError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if cost_sign not in COST_SIGN:
        raise DataError(f"cost_sign must be one of {', '.join(COST_SIGN)}, got {cost_sign!r}")


def _score_settings(data_dir: Path, normalize: str | None, cost_sign: str | None
                    ) -> tuple[str, str]:
    """The given settings, else those in ``scores.json``, else the reference's."""
    stored: dict[str, Any] = {}
    path = data_dir / SETTINGS_FILE
    if path.is_file() and (normalize is None or cost_sign is None):
        stored = read_json(path, "a JSON object with 'normalize' and 'cost_sign'")
        if not isinstance(stored, dict):
            raise DataError(f"{path}: expected a JSON object with 'normalize' and 'cost_sign'")
    normalize = normalize or stored.get("normalize", "none")
    cost_sign = cost_sign or stored.get("cost_sign", "raw")
    _check_settings(normalize, cost_sign)
    return normalize, cost_sign


def _adjust(scores: np.ndarray, valid: np.ndarray, normalize: str, cost_sign: str) -> np.ndarray:
    """[P, 8, 10] scores with the cost model's sign and the per-model standardization applied."""
    out = scores.copy()
    if cost_sign == "flip":
        out[:, :, MODELS.index(COST_MODEL)] *= -1.0
    if normalize == "zscore":
        usable = out[valid].reshape(-1, len(MODELS))  # every response of every usable prompt
        mean, std = usable.mean(axis=0), usable.std(axis=0)
        out = (out - mean) / np.where(std > 0, std, 1.0)
    return out


def simulated_user_weights(seed: int, num_users: int, alpha: float = 0.1) -> np.ndarray:
    """[num_users, 10] Dirichlet(alpha) mixtures: seen users first, then unseen."""
    return np.random.default_rng([seed, 0]).dirichlet(np.full(len(MODELS), alpha), size=num_users)


def _per_user(frac: float, prompts: int, name: str, split: str) -> int:
    if not 0.0 < frac <= 1.0:
        raise DataError(f"{name}: fraction must be in (0, 1], got {frac}")
    n = int(frac * prompts)
    if n < 1:
        raise DataError(f"{name}: {frac} of the {prompts} usable {split} prompts is no prompt per "
                        "user; raise the fraction")
    return n


def _simulate(emb, scores, valid, weights, ids, per_user, key, split, dtype):
    """Sample each user's prompts, then gather best-minus-worst rows in chunks."""
    seed, stream, first = key
    if per_user == valid.size:
        prompts = np.tile(valid, len(ids))
    else:
        prompts = np.concatenate([
            np.sort(np.random.default_rng([seed, stream, first + u]).choice(valid, per_user,
                                                                            replace=False))
            for u in range(len(ids))
        ])
    users = np.repeat(np.arange(len(ids)), per_user)
    best = np.empty(prompts.size, dtype=np.int64)
    worst = np.empty(prompts.size, dtype=np.int64)
    for lo in range(0, prompts.size, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        mixed = np.einsum("nrm,nm->nr", scores[prompts[sl]], weights[users[sl]])
        best[sl], worst[sl] = mixed.argmax(1), mixed.argmin(1)
    keep = np.flatnonzero(best != worst)
    dropped = int(prompts.size - keep.size)
    prompts, users, best, worst = prompts[keep], users[keep], best[keep], worst[keep]
    features = torch.empty(prompts.size, emb.shape[1], dtype=dtype)
    rows_best = torch.from_numpy(prompts * RESPONSES + best)
    rows_worst = torch.from_numpy(prompts * RESPONSES + worst)
    for lo in range(0, prompts.size, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        features[sl] = (emb[rows_best[sl]].float() - emb[rows_worst[sl]].float()).to(dtype)
    pairs = PreferencePairs(features, torch.from_numpy(users.astype(np.int64)), ids,
                            [f"{split}:{p}" for p in prompts.tolist()])
    return pairs, dropped


def _read_split(data_dir: Path, split: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embeddings [8P, d], scores [P, 8, 10] float64, and the usable prompt indices."""
    emb_path = data_dir / f"{split}.safetensors"
    emb = read_safetensors(emb_path, "embeddings",
                           "'embeddings' [8*P, d]: row 8p+i embeds response i+1 of prompt p")
    if emb.ndim != 2 or not emb.is_floating_point() or emb.shape[0] % RESPONSES:
        raise DataError(f"{emb_path}: 'embeddings' has shape {tuple(emb.shape)} {emb.dtype}; "
                        f"expected a float [8*P, d] matrix (8 responses per prompt)")
    table_path, columns = _read_scores(data_dir, split)
    if columns.shape[0] * RESPONSES != emb.shape[0]:
        raise DataError(f"{table_path}: {columns.shape[0]} prompts but {emb_path.name} has "
                        f"{emb.shape[0]} rows = {emb.shape[0] / RESPONSES:g} prompts x 8")
    scores = columns.reshape(-1, RESPONSES, len(MODELS))
    valid = np.flatnonzero(np.isfinite(scores).all(axis=(1, 2)))
    if valid.size == 0:
        raise DataError(f"{table_path}: every prompt has a missing reward score")
    return emb, scores, valid


def _read_scores(data_dir: Path, split: str) -> tuple[Path, np.ndarray]:
    """The 80 score columns as float64 [P, 80] (NaN where missing)."""
    parquet, plain = data_dir / f"{split}.parquet", data_dir / f"{split}.csv"
    if parquet.is_file():
        return parquet, _parquet_scores(parquet)
    if plain.is_file():
        return plain, _csv_scores(plain)
    raise DataError(f"{parquet}: file not found (nor {plain.name}); expected a table of reward "
                    f"scores with columns response_{{1..8}}_{{{','.join(MODELS)}}}")


def _parquet_scores(path: Path) -> np.ndarray:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), "
                        "or give the same table as CSV") from None
    try:
        names = pq.read_schema(path).names
    except Exception as err:  # pyarrow raises several unrelated types for bad files
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    _check_columns(path, names)
    table = pq.read_table(path, columns=list(SCORE_COLUMNS))
    return np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                     for c in SCORE_COLUMNS], axis=1)


def _csv_scores(path: Path) -> np.ndarray:
    header, records = csv_rows(path)
    _check_columns(path, header)
    cols = [header.index(c) for c in SCORE_COLUMNS]
    rows = []
    for line_no, record in records:
        if len(record) != len(header):
            raise DataError(f"{path}, line {line_no}: {len(record)} fields but the "
                            f"header has {len(header)}")
        rows.append([_number(record[c], path, line_no, header[c]) for c in cols])
    if not rows:
        raise DataError(f"{path}: no prompts")
    return np.asarray(rows, dtype=np.float64)


def _number(text: str, path: Path, line: int, column: str) -> float:
    if text.strip() in ("", "nan", "NaN", "None", "null"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}, line {line}: column {column} holds {text!r}, not a number") from None


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in SCORE_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{path}: missing {len(missing)} reward column(s), e.g. {missing[:3]}; "
                        "expected response_{1..8}_{model} for the 10 PersonalLLM reward models")
