"""The canonical on-disk form of a Benchmark, readable one block of users at a time.

A directory holds

- ``benchmark.json``: format version, the data set's meta, and per split its
  user/pair counts, feature dim and dtype, and its row shards
  (``[{"file": ..., "rows": [start, stop]}, ...]``, the index);
- ``benchmark.safetensors``: the small per-user tables of every split —
  ``{split}.offsets`` (int64 [N+1]: user u owns rows offsets[u]:offsets[u+1]),
  the user ids and the prompt-id vocabulary as UTF-8 string tables
  (``{split}.user_ids`` uint8 bytes + ``{split}.user_id_ends`` int64 [N], and
  ``{split}.prompts`` + ``{split}.prompt_ends``) — and ``v_ref``;
- the rows, sorted by user: ``{split}.features`` [M, d] and ``{split}.prompt``
  (int32 [M], index into the vocabulary). Unsharded they sit in
  ``benchmark.safetensors`` too; with ``max_shard_bytes`` they are cut into
  ``benchmark-{split}-00001.safetensors``, ... (the way sharded checkpoints
  are), so no single file has to hold a split.

Why: a process that trains on users [a, b) reads the offsets (8 bytes per
user), then only rows offsets[a]:offsets[b] of the shards that hold them,
through safetensors' memory-mapped ``get_slice``; nothing else is read. The
writer streams (``BenchmarkWriter.add`` per block of users) so a data set
larger than memory can be produced, and ``benchmark.json`` is written last,
so an interrupted write leaves no loadable half.

Format 1 (all rows in one file, ids in the JSON) still loads as a whole.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import DataError
from .pairs import SPLITS, Benchmark, PreferencePairs, non_finite_row
from .paths import contained
from .runtime import durable
from .runtime.outputs import atomic_write, atomic_write_text
from .sharding import offsets_digest, process_blocks
from .textio import read_json

FORMAT_VERSION = 2
INDEX = "benchmark.json"
HEAD = "benchmark.safetensors"
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")  # what features may be stored as


# -- string tables -----------------------------------------------------------
def encode_strings(strings: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes (uint8) and end offsets (int64) of ``strings``, concatenated."""
    encoded = [s.encode("utf-8") for s in strings]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return torch.from_numpy(data), torch.from_numpy(ends)


def decode_strings(data: bytes, ends: np.ndarray, base: int = 0) -> list[str]:
    """Inverse of ``encode_strings`` for entries whose bytes start at ``base``."""
    starts = np.concatenate([[base], ends[:-1]]) - base
    stops = ends - base
    return [data[a:b].decode("utf-8") for a, b in zip(starts.tolist(), stops.tolist())]


def check_features(features: torch.Tensor, where: str, first_row: int = 0) -> None:
    """Features must be floating point and finite: a `DataError` naming ``where`` and the row."""
    if not features.is_floating_point():
        raise DataError(f"{where}: features must be floating point, got "
                        f"{str(features.dtype).removeprefix('torch.')}")
    row = non_finite_row(features)
    if row is not None:
        raise DataError(f"{where}: row {first_row + row} is not finite (NaN or inf)")


# -- writing -----------------------------------------------------------------
@dataclass
class _SplitState:
    """What the writer knows of one split so far (rows not yet in a shard are ``pending``)."""

    counts: list[np.ndarray] = field(default_factory=list)  # rows per user, block by block
    id_bytes: bytearray = field(default_factory=bytearray)  # user ids as bytes, not str objects
    id_lengths: list[np.ndarray] = field(default_factory=list)
    users: int = 0
    vocab: dict[str, int] = field(default_factory=dict)  # prompt id -> index, first seen first
    has_prompts: bool | None = None
    rows: int = 0  # rows already in shards
    pending: list[tuple[torch.Tensor, np.ndarray | None]] = field(default_factory=list)
    pending_rows: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)


class BenchmarkWriter:
    """Write a Benchmark split by split, block of users by block, in bounded memory.

    ``add(split, features, counts, user_ids, prompt_ids)`` appends users (in
    order) and their rows; ``close(meta, v_ref)`` writes the per-user tables
    and the index. Rows are held until a shard of ``max_shard_bytes`` fills
    (None: one file, everything held until ``close``).
    """

    def __init__(self, directory: str | Path, *, dim: int, dtype: torch.dtype = torch.float32,
                 max_shard_bytes: int | None = None) -> None:
        if max_shard_bytes is not None and max_shard_bytes < 1:
            raise DataError(f"max_shard_bytes must be >= 1 or None, got {max_shard_bytes}")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise DataError(f"{self.directory}: exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        # An old index pointing at files we are about to replace must not survive a crash.
        (self.directory / INDEX).unlink(missing_ok=True)
        for old in self.directory.glob("benchmark-*.safetensors"):
            old.unlink()
        self.dim, self.dtype = dim, dtype
        row_bytes = dim * torch.empty((), dtype=dtype).element_size() + 4
        self.rows_per_shard = None if max_shard_bytes is None else max(1, max_shard_bytes // row_bytes)
        self.splits = {s: _SplitState() for s in SPLITS}
        self.head: dict[str, torch.Tensor] = {}

    def add(self, split: str, features: torch.Tensor, counts: Sequence[int] | np.ndarray,
            user_ids: Sequence[str], prompt_ids: Sequence[str] | None = None) -> None:
        """Append ``user_ids`` owning ``counts`` consecutive rows each of ``features``."""
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        state = self.splits[split]
        counts = np.asarray(counts, dtype=np.int64)
        check_features(features, f"{split} (users {state.users}..)")
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise DataError(f"{split}: features must be [M, {self.dim}], got {tuple(features.shape)}")
        if counts.shape != (len(user_ids),) or int(counts.sum()) != features.shape[0] or (counts < 0).any():
            raise DataError(f"{split}: counts must give each of the {len(user_ids)} users its "
                            f"rows, summing to {features.shape[0]}")
        if prompt_ids is not None and len(prompt_ids) != features.shape[0]:
            raise DataError(f"{split}: {len(prompt_ids)} prompt ids for {features.shape[0]} rows")
        has = prompt_ids is not None
        if state.has_prompts is not None and state.has_prompts != has:
            raise DataError(f"{split}: prompt ids given for some blocks but not others")
        state.has_prompts = has
        prompt = None
        if has:
            vocab = state.vocab
            prompt = np.fromiter((vocab.setdefault(str(p), len(vocab)) for p in prompt_ids),
                                 dtype=np.int32, count=len(prompt_ids))
        state.counts.append(counts)
        encoded = [str(u).encode("utf-8") for u in user_ids]
        state.id_bytes += b"".join(encoded)
        state.id_lengths.append(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        state.users += len(encoded)
        state.pending.append((features.detach().to("cpu", self.dtype).contiguous(), prompt))
        state.pending_rows += features.shape[0]
        while self.rows_per_shard is not None and state.pending_rows >= self.rows_per_shard:
            self._flush(split, self.rows_per_shard)

    def _take(self, split: str, n: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """The first ``n`` pending rows of ``split``, removed from the buffer."""
        state = self.splits[split]
        feats, prompts, got = [], [], 0
        while got < n:
            f, p = state.pending[0]
            need = n - got
            if f.shape[0] > need:
                state.pending[0] = (f[need:], None if p is None else p[need:])
                f, p = f[:need], None if p is None else p[:need]
            else:
                state.pending.pop(0)
            feats.append(f)
            prompts.append(p)
            got += f.shape[0]
        state.pending_rows -= n
        features = torch.cat(feats) if feats else torch.empty(0, self.dim, dtype=self.dtype)
        prompt = None if not state.has_prompts else (
            np.concatenate(prompts) if prompts else np.empty(0, dtype=np.int32))
        return features, prompt

    def _flush(self, split: str, n: int) -> None:
        state = self.splits[split]
        features, prompt = self._take(split, n)
        name = f"benchmark-{split}-{len(state.shards) + 1:05d}.safetensors"
        tensors = {f"{split}.features": features}
        if prompt is not None:
            tensors[f"{split}.prompt"] = torch.from_numpy(prompt)
        atomic_write(self.directory / name, lambda tmp: save_file(tensors, tmp))
        state.shards.append({"file": name, "rows": [state.rows, state.rows + n]})
        state.rows += n

    def close(self, meta: dict[str, Any] | None = None, v_ref: torch.Tensor | None = None) -> None:
        """Write the remaining rows, the per-user tables and, last, the index."""
        index: dict[str, Any] = {}
        for split, state in self.splits.items():
            if self.rows_per_shard is None:
                features, prompt = self._take(split, state.pending_rows)
                self.head[f"{split}.features"] = features
                if prompt is not None:
                    self.head[f"{split}.prompt"] = torch.from_numpy(prompt)
                state.shards.append({"file": HEAD, "rows": [0, features.shape[0]]})
                state.rows = features.shape[0]
            elif state.pending_rows:
                self._flush(split, state.pending_rows)
            counts = np.concatenate(state.counts) if state.counts else np.zeros(0, np.int64)
            self.head[f"{split}.offsets"] = torch.from_numpy(
                np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
            lengths = np.concatenate(state.id_lengths) if state.id_lengths else np.zeros(0, np.int64)
            self.head[f"{split}.user_ids"] = torch.frombuffer(state.id_bytes, dtype=torch.uint8) \
                if state.id_bytes else torch.zeros(0, dtype=torch.uint8)
            self.head[f"{split}.user_id_ends"] = torch.from_numpy(np.cumsum(lengths))
            if state.has_prompts:
                data, ends = encode_strings(list(state.vocab))
                self.head[f"{split}.prompts"], self.head[f"{split}.prompt_ends"] = data, ends
            index[split] = {
                "users": state.users, "pairs": state.rows, "dim": self.dim,
                "dtype": str(self.dtype).removeprefix("torch."),
                "prompts": bool(state.has_prompts), "shards": state.shards,
            }
        if v_ref is not None:
            self.head["v_ref"] = v_ref.detach().contiguous().cpu()
        atomic_write(self.directory / HEAD, lambda tmp: save_file(self.head, tmp))
        doc = {"format": FORMAT_VERSION, "meta": meta or {}, "splits": index}
        atomic_write_text(self.directory / INDEX, json.dumps(doc, indent=1))


@contextmanager
def dataset_directory(directory: str | Path, *, flag: str = "--out") -> Iterator[Path]:
    """The directory to write a data set into, replacing one already at ``directory`` safely.

    The directory is locked for the write (`durable.lock`: a second writer
    is refused) after an interrupted swap is finished or rolled back. A new
    directory, or one without a ``benchmark.json``, is written in place; an
    existing data set is replaced as a whole: the new one is written beside
    it and swapped in when complete (`durable.swap_in`), so a full disk, an
    error or a kill leaves the old one as it was.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{flag} {directory}: exists and is not a directory")
    with durable.lock(directory, flag=flag):
        durable.recover(directory)
        if not (directory / INDEX).is_file():
            yield directory
            return
        staging = durable.new_dir(directory, "new")
        try:
            yield staging
            durable.swap_in(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def save_benchmark(bench: Benchmark, directory: str | Path, *,
                   max_shard_bytes: int | None = None) -> None:
    """Write ``bench`` in the canonical form (``max_shard_bytes``: cut rows into shards);
    an existing data set there is replaced as a whole (`dataset_directory`)."""
    dtypes = {bench.split(s).features.dtype for s in SPLITS}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    with dataset_directory(directory) as work:
        writer = BenchmarkWriter(work, dim=bench.dim, dtype=dtype, max_shard_bytes=max_shard_bytes)
        for split in SPLITS:
            part = bench.split(split)
            writer.add(split, part.features, part.pairs_per_user().numpy(), part.user_ids,
                       part.prompt_ids)
        writer.close(bench.meta, bench.v_ref)


# -- reading -----------------------------------------------------------------
class _Reader:
    """One canonical directory: the index, and tensors read by name or row range."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise DataError(f"{self.directory}: benchmark directory not found")
        self.index_path = self.directory / INDEX
        doc = read_json(self.index_path, "the index of a saved benchmark")
        if not isinstance(doc, dict) or "splits" not in doc:
            raise DataError(f"{self.index_path}: not a benchmark index (no 'splits')")
        self.doc = doc
        self.format = doc.get("format")
        if self.format not in (1, FORMAT_VERSION):
            raise DataError(f"{self.index_path}: format {self.format!r} is not one this version "
                            f"reads (1 or {FORMAT_VERSION})")

    def _open(self, name: str, where: str | None = None):
        path = contained(self.directory, name, where or f"{self.index_path}: file")
        if not path.is_file():
            raise DataError(f"{path}: file not found (listed in {self.index_path.name})")
        try:
            return safe_open(path, framework="pt")
        except (SafetensorError, OSError) as err:
            raise DataError(f"{path}: not a readable safetensors file ({err})") from None

    def head(self, key: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """A tensor of ``benchmark.safetensors``, or rows start:stop of it."""
        with self._open(HEAD) as f:
            if key not in set(f.keys()):
                raise DataError(f"{self.directory / HEAD}: no tensor {key!r}")
            return f.get_slice(key)[start:stop]

    def has(self, key: str) -> bool:
        with self._open(HEAD) as f:
            return key in set(f.keys())

    def split_doc(self, split: str) -> dict[str, Any]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if self.format != FORMAT_VERSION:
            raise DataError(f"{self.index_path}: format {self.format} has no row-range reads; "
                            "load it and save it again (save_benchmark(load_benchmark(d), d))")
        doc = self.doc["splits"].get(split) if isinstance(self.doc["splits"], dict) else None
        if not isinstance(doc, dict):
            raise DataError(f"{self.index_path}: no split {split!r}")
        ints = ("users", "pairs", "dim")
        if (any(not isinstance(doc.get(k), int) or isinstance(doc[k], bool) or doc[k] < 0
                for k in ints)
                or not isinstance(getattr(torch, str(doc.get("dtype")), None), torch.dtype)
                or not isinstance(doc.get("shards"), list)
                or not all(isinstance(x, dict) and "file" in x
                           and isinstance(x.get("rows"), list) and len(x["rows"]) == 2
                           for x in doc["shards"])):
            raise DataError(f"{self.index_path}: split {split!r} needs users, pairs, dim, dtype "
                            "and a list of shards {file, rows: [start, stop]}")
        previous = 0
        for i, shard in enumerate(doc["shards"]):
            where = f"{self.index_path}: split {split!r} shard {i}"
            contained(self.directory, shard["file"], f"{where} 'file'")
            lo, hi = shard["rows"]
            if (not all(isinstance(r, int) and not isinstance(r, bool) for r in (lo, hi))
                    or not previous <= lo <= hi <= doc["pairs"]):
                raise DataError(f"{where} 'rows': {shard['rows']!r} is not a range of whole rows "
                                f"within 0..{doc['pairs']} after the previous shard")
            previous = hi
        if doc["dtype"] not in FLOAT_DTYPES:
            raise DataError(f"{self.index_path}: split {split!r} 'dtype': {doc['dtype']!r} is not "
                            f"a floating-point type ({', '.join(FLOAT_DTYPES)})")
        return doc

    def offsets(self, split: str) -> torch.Tensor:
        doc = self.split_doc(split)
        offsets = self.head(f"{split}.offsets")
        if (offsets.shape != (doc["users"] + 1,) or offsets.dtype != torch.int64
                or int(offsets[0]) != 0 or int(offsets[-1]) != doc["pairs"]
                or bool((offsets[1:] < offsets[:-1]).any())):
            raise DataError(f"{self.directory / HEAD}: {split}.offsets is not a table of "
                            f"{doc['users']} users' rows ending at {doc['pairs']}")
        return offsets

    def rows(self, split: str, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of a per-row tensor, gathered from the shards that hold them."""
        doc = self.split_doc(split)
        if start == stop:
            if key == "features":
                return torch.empty(0, doc["dim"], dtype=getattr(torch, doc["dtype"]))
            return torch.empty(0, dtype=torch.int32)
        # Copy each shard's slice into one preallocated tensor: peak memory is
        # the result plus one slice, not twice the result (as a torch.cat would be).
        out: torch.Tensor | None = None
        filled = 0
        for shard in doc["shards"]:
            lo, hi = shard["rows"]
            a, b = max(start, lo), min(stop, hi)
            if a >= b:
                continue
            where = f"{self.index_path}: split {split!r} shard 'file'"
            path = contained(self.directory, shard["file"], where)
            with self._open(shard["file"], where) as f:
                if f"{split}.{key}" not in set(f.keys()):
                    raise DataError(f"{path}: no tensor {split}.{key!r}")
                part = f.get_slice(f"{split}.{key}")
                if part.get_shape()[0] != hi - lo:
                    raise DataError(f"{path}: {split}.{key} has {part.get_shape()[0]} rows, "
                                    f"the index says {hi - lo}")
                piece = part[a - lo:b - lo]
                if key == "features":
                    check_features(piece, f"{path}: {split}.features", first_row=a - lo)
            if a == start and b == stop:
                return piece
            if out is None:
                out = torch.empty((stop - start, *piece.shape[1:]), dtype=piece.dtype)
            if a - start != filled or tuple(piece.shape[1:]) != tuple(out.shape[1:]):
                raise DataError(f"{path}: rows {a}:{b} of {split}.{key} do not continue the "
                                "previous shard")
            out[filled:filled + piece.shape[0]] = piece
            filled += piece.shape[0]
            del piece
        if out is None or filled != stop - start:
            raise DataError(f"{self.index_path}: the shards of {split} do not hold rows "
                            f"{start}:{stop}")
        return out

    def strings(self, split: str, name: str, ends_name: str, start: int, stop: int) -> list[str]:
        """Entries start:stop of a string table."""
        ends = self.head(f"{split}.{ends_name}", start, stop).numpy()
        if ends.size == 0:
            return []
        base = int(self.head(f"{split}.{ends_name}", start - 1, start)[0]) if start > 0 else 0
        data = self.head(f"{split}.{name}", base, int(ends[-1])).numpy().tobytes()
        try:
            return decode_strings(data, ends, base)
        except UnicodeDecodeError:
            raise DataError(f"{self.directory / HEAD}: {split}.{name} is not UTF-8") from None


def user_offsets(path: str | Path, split: str = "seen_train") -> torch.Tensor:
    """int64 [N+1] row offsets of ``split``'s users: all a process needs to plan its shard.

    Reads only that table (8 bytes per user), not the rows.
    """
    return _Reader(path).offsets(split)


def read_users(path: str | Path, user_start: int, user_stop: int, *, split: str = "seen_train",
               with_prompts: bool = True) -> PreferencePairs:
    """Users ``user_start:user_stop`` of ``split`` and only their rows.

    The result's user list is just those users (local index i is global
    index ``user_start + i``). ``with_prompts=False`` skips the prompt ids
    (a list of one string per row), which training does not need.
    """
    reader = _Reader(path)
    offsets = reader.offsets(split)
    n = offsets.shape[0] - 1
    if not 0 <= user_start <= user_stop <= n:
        raise DataError(f"{path}: users {user_start}:{user_stop} out of range for {split}'s "
                        f"{n} users")
    return _read_block(reader, split, offsets, user_start, user_stop, with_prompts)


def _read_block(reader: _Reader, split: str, offsets: torch.Tensor, u0: int, u1: int,
                with_prompts: bool) -> PreferencePairs:
    r0, r1 = int(offsets[u0]), int(offsets[u1])
    features = reader.rows(split, "features", r0, r1)
    doc = reader.split_doc(split)
    if features.ndim != 2 or features.shape[1] != doc["dim"]:
        raise DataError(f"{reader.directory}: {split}.features rows are {tuple(features.shape)}, "
                        f"the index says dim {doc['dim']}")
    counts = (offsets[u0 + 1:u1 + 1] - offsets[u0:u1])
    user = torch.repeat_interleave(torch.arange(u1 - u0, dtype=torch.int64), counts)
    user_ids = reader.strings(split, "user_ids", "user_id_ends", u0, u1)
    prompt_ids = None
    if with_prompts and doc.get("prompts"):
        index = reader.rows(split, "prompt", r0, r1).numpy()
        if index.size:
            lo, hi = int(index.min()), int(index.max()) + 1
            vocab = reader.strings(split, "prompts", "prompt_ends", lo, hi)
            if len(vocab) != hi - lo:
                raise DataError(f"{reader.directory / HEAD}: {split}.prompt indexes past the "
                                "prompt vocabulary")
            prompt_ids = [vocab[i - lo] for i in index.tolist()]
        else:
            prompt_ids = []
    try:
        return PreferencePairs(features, user, user_ids, prompt_ids)
    except ValueError as err:
        raise DataError(f"{reader.directory}: {split} is inconsistent ({err})") from None


def read_benchmark_users(path: str | Path, seen: tuple[int, int], unseen: tuple[int, int], *,
                         with_prompts: bool = True) -> Benchmark:
    """A Benchmark of seen users ``seen[0]:seen[1]`` and unseen users ``unseen[0]:unseen[1]``.

    The train/test halves of each share one user list, as in the whole; the
    meta records the blocks under ``"users_block"``.
    """
    reader = _Reader(path)
    parts = {}
    for split in SPLITS:
        u0, u1 = seen if split.startswith("seen") else unseen
        offsets = reader.offsets(split)
        if not 0 <= u0 <= u1 <= offsets.shape[0] - 1:
            raise DataError(f"{path}: users {u0}:{u1} out of range for {split}'s "
                            f"{offsets.shape[0] - 1} users")
        parts[split] = _read_block(reader, split, offsets, u0, u1, with_prompts)
    v_ref = reader.head("v_ref") if reader.has("v_ref") else None
    meta = {**reader.doc.get("meta", {}), "users_block": {"seen": list(seen), "unseen": list(unseen)}}
    try:
        return Benchmark(**parts, v_ref=v_ref, meta=meta)
    except ValueError as err:
        raise DataError(f"{path}: inconsistent benchmark ({err})") from None


def read_process_share(path: str | Path, process_rank: int, world_size: int, *,
                       with_prompts: bool = False) -> Benchmark:
    """Process ``process_rank``'s pair-balanced share of a saved Benchmark
    (``sharding.process_blocks``; torch.distributed's rank, not K).

    Seen users are balanced on ``seen_train`` pairs, unseen users on
    ``unseen_fewshot`` pairs; every process computes the same plan from the
    offsets alone, and the blocks of all ranks cover every user once. The
    meta's ``users_block`` records the blocks and a ``digest`` of all
    offsets (`sharding.offsets_digest`), for ranks to check they agree.
    """
    reader = _Reader(path)
    offsets = {split: reader.offsets(split) for split in SPLITS}
    seen, unseen = process_blocks(offsets, process_rank, world_size)
    bench = read_benchmark_users(path, seen, unseen, with_prompts=with_prompts)
    bench.meta["users_block"].update(rank=process_rank, world_size=world_size,
                                     digest=offsets_digest(offsets))
    return bench


def row_range_readable(path: str | Path) -> bool:
    """Whether ``path`` is a saved Benchmark in the form `read_process_share` reads (format 2)."""
    index = Path(path) / INDEX
    if not index.is_file():
        return False
    doc = read_json(index, "the index of a saved benchmark")
    return isinstance(doc, dict) and doc.get("format") == FORMAT_VERSION


def load_benchmark(path: str | Path) -> Benchmark:
    """The whole saved Benchmark (either format)."""
    reader = _Reader(path)
    if reader.format == 1:
        return _load_v1(reader)
    doc = reader.doc["splits"]
    bench = read_benchmark_users(path, (0, _users(doc, "seen_train")), (0, _users(doc, "unseen_test")))
    bench.meta.pop("users_block")
    return bench


def _users(doc: dict[str, Any], split: str) -> int:
    try:
        return int(doc[split]["users"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"benchmark index: split {split!r} has no user count") from None


def _load_v1(reader: _Reader) -> Benchmark:
    path = reader.directory / HEAD
    if not path.is_file():
        raise DataError(f"{path}: file not found (listed in {INDEX})")
    try:
        tensors = load_file(path)
        splits = {
            name: PreferencePairs.from_storage(tensors, reader.doc["splits"][name], prefix=f"{name}.")
            for name in SPLITS
        }
        for name, part in splits.items():
            check_features(part.features, f"{path}: {name}.features")
        return Benchmark(**splits, v_ref=tensors.get("v_ref"), meta=reader.doc.get("meta", {}))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(f"{reader.directory}: inconsistent format-1 benchmark ({err})") from None
