"""Text pairs -> embeddings on disk, resumable, in a layout the loaders read.

``embed_pairs`` writes the generic layout, so ``lore-train --dataset DIR``
reads the result directly:

    comparisons.csv   user_id,prompt_id,response_a,response_b,label[,split]
                      (response_a is the chosen response; label is always a)
    responses.jsonl   one distinct (prompt conversation, response) per line
    embeddings.npy    fp32 [R, d], row i embeds line i of responses.jsonl
    embeddings.json   the embedder, its dimension and the head check
    v_ref.safetensors the reward head (key v_ref), for reward models only

``embed_personalllm`` writes PersonalLLM's reference layout instead
(``{split}.safetensors`` with key ``embeddings`` + ``{split}.csv`` scores).

Resuming: rows are embedded in shards under ``shards/``; a manifest records
the finished ones with a fingerprint of the inputs and the embedder, so a
rerun after an interruption skips them, and a rerun with other inputs stops
instead of mixing the two. A shard file appears only once complete (written
then renamed), so a shard file present counts as finished too. With a
reward-model embedder the shards follow its global length order (a prompt's
rows together, so the shared prefix is computed once); the manifest records a
digest of that order (a rerun with another ``max_length`` or sharing stops)
and the throughput so far, and the merge puts every row back in its input
place. ``embeddings.json`` keeps the final throughput (tokens, padding,
tokens saved, tokens/s, rows cut to ``max_length``).

Under torchrun (an initialized default process group) the shards are dealt
out round-robin: process r embeds shards r, r + W, r + 2W, ... (W processes)
into the same ``shards/`` directory (one file system, shared between nodes),
each resumable as above; process 0 writes the manifest first and, once every
process has finished, merges the shards in shard order and writes the other
files. A shard holds the same rows whatever W, so the result equals a
one-process run's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..errors import DataError
from ..personalllm import RESPONSES, SCORE_COLUMNS
from ..runtime import collectives, durable
from ..runtime.outputs import atomic_write, atomic_write_text
from .reward_model import check_head

Message = dict[str, str]
MANIFEST = "manifest.json"


@dataclass
class TextPair:
    """One judgment: after ``prompt`` (a chat ending with the user's turn), ``chosen`` beat ``rejected``."""

    user_id: str
    prompt: list[Message]
    chosen: str
    rejected: str
    prompt_id: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def conversation(self, response: str) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": response}]


def embed_pairs(pairs: Iterable[TextPair], embedder: Any, out_dir: str | Path, *,
                shard_size: int = 512, check_pairs: int = 8, progress: bool = True,
                source: dict[str, Any] | None = None) -> Path:
    """Embed each distinct response once and write the generic layout into ``out_dir``.

    ``source`` (where the pairs came from, what was dropped) is kept in
    ``embeddings.json`` beside the embedder's throughput figures; each key of
    the pairs' ``extra`` becomes a column of ``comparisons.csv``.
    """
    pairs = list(pairs)
    if not pairs:
        raise DataError("no text pairs to embed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    responses: dict[tuple[str, str], int] = {}
    records: list[dict[str, Any]] = []
    rows: list[tuple[int, int]] = []
    for n, pair in enumerate(pairs):
        if not pair.prompt or pair.prompt[-1].get("role") != "user":
            raise DataError(f"pair {n} (user {pair.user_id!r}): the prompt must end with a user turn")
        if pair.chosen == pair.rejected:
            raise DataError(f"pair {n} (user {pair.user_id!r}): chosen and rejected are the same text")
        prompt_key = json.dumps(pair.prompt, sort_keys=True, ensure_ascii=False)
        prompt_id = pair.prompt_id or "p" + hashlib.sha1(prompt_key.encode()).hexdigest()[:12]
        ids = []
        for text in (pair.chosen, pair.rejected):
            key = (prompt_key, text)
            if key not in responses:
                responses[key] = len(records)
                records.append({"response_id": f"r{len(records)}", "prompt_id": prompt_id,
                                "prompt": pair.prompt, "text": text})
            ids.append(responses[key])
        rows.append((ids[0], ids[1]))
    if any(records[a]["prompt_id"] != records[b]["prompt_id"] for a, b in rows):
        raise DataError("two different prompts were given the same prompt_id")
    conversations = [[*r["prompt"], {"role": "assistant", "content": r["text"]}] for r in records]
    fingerprint = _fingerprint(embedder, conversations)
    matrix = embed_resumable(conversations, embedder, out / "shards", fingerprint,
                             out / "embeddings.npy", shard_size=shard_size, progress=progress)
    if _rank() != 0:  # process 0 writes the rest
        return out

    _write_jsonl(out / "responses.jsonl", records)
    with_split = any(p.split is not None for p in pairs)
    atomic_write_text(out / "comparisons.csv", _comparisons_csv(pairs, rows, records, with_split))
    sidecar: dict[str, Any] = {"model": embedder.name, "kind": embedder.kind,
                               "dim": int(matrix.shape[1]), "responses": len(records),
                               "pairs": len(pairs), "fingerprint": fingerprint}
    if getattr(embedder, "recipe", None) is not None:
        sidecar["recipe"] = embedder.recipe
    if source is not None:
        sidecar["source"] = source
    if getattr(embedder, "stats", None) is not None:
        sidecar["throughput"] = embedder.stats.as_dict()
        sidecar["settings"] = getattr(embedder, "settings", {})
    if embedder.v_ref is not None:
        _save_tensors({"v_ref": embedder.v_ref.contiguous()}, out / "v_ref.safetensors")
        k = min(check_pairs, len(rows))
        chosen = [conversations[a] for a, _ in rows[:k]]
        rejected = [conversations[b] for _, b in rows[:k]]
        sidecar["head_check"] = check_head(
            embedder, chosen, rejected,
            torch.from_numpy(np.stack([matrix[a] for a, _ in rows[:k]])),
            torch.from_numpy(np.stack([matrix[b] for _, b in rows[:k]])),
        )
    atomic_write_text(out / "embeddings.json", json.dumps(sidecar, indent=1))
    return out


def embed_resumable(conversations: Sequence[Sequence[Message]], embedder: Any, shard_dir: Path,
                    fingerprint: str, target: Path, *, shard_size: int = 512,
                    progress: bool = True) -> np.ndarray:
    """Embed in shards recorded in a manifest, then assemble ``target`` (.npy, fp32).

    An embedder with ``tokenize``/``order``/``embed_tokens`` (the reward
    model) is run in its global order: every row is tokenized once, the rows
    are sorted by length with a prompt's rows together, and shard i holds rows
    ``order[i*S:(i+1)*S]``; the merge puts each row back in its input place.
    Under torchrun each process embeds its round-robin share of the shards
    and process 0 merges them (see the module doc); every process returns
    the merged matrix.
    """
    if shard_size < 1:
        raise DataError(f"shard_size must be >= 1, got {shard_size}")
    rank, world = _rank(), _world()
    if world > 1:
        collectives.check_agree((fingerprint, len(conversations), shard_size),
                                "inputs, embedder or shard size")
    n = len(conversations)
    manifest_path = shard_dir / MANIFEST
    finished = _finished(target, manifest_path, fingerprint, n)
    if world > 1:
        collectives.check_agree(finished, "the state of the output directory")
    if finished:
        return np.load(target, mmap_mode="r")
    planned = all(hasattr(embedder, a) for a in ("tokenize", "order", "embed_tokens"))
    if planned:
        tokens, keys = embedder.tokenize(conversations)
        order = list(embedder.order(tokens, keys))
    else:
        tokens, keys, order = [], [], list(range(n))
    order_digest = hashlib.sha256(np.asarray(order, dtype=np.int64).tobytes()).hexdigest()[:16]
    if rank == 0:
        manifest = _open_manifest(shard_dir, fingerprint, n, shard_size, order_digest)
    if world > 1:
        collectives.barrier("the embedding manifest")
        manifest = (_open_manifest(shard_dir, fingerprint, n, shard_size, order_digest) if rank
                    else manifest)
    shards = range((n + shard_size - 1) // shard_size)
    # a shard counts as done when its file is there (one deleted, say a damaged one, is redone)
    done = {i for i in shards if (shard_dir / f"{i:06d}.npy").is_file()}
    for i in sorted(done):  # a shard a power loss cut short is named now, not after the rest
        read_shard(shard_dir / f"{i:06d}.npy", min(shard_size, n - i * shard_size), header_only=True)
    mine = [i for i in shards if i % world == rank]
    bar = tqdm(total=sum(min(shard_size, n - i * shard_size) for i in mine),
               desc=f"embedding ({embedder.name})", unit="seq", disable=not progress or rank != 0,
               initial=sum(min(shard_size, n - i * shard_size) for i in mine if i in done))
    stats = getattr(embedder, "stats", None)
    for i in mine:
        if i in done:
            continue
        lo, hi = i * shard_size, min((i + 1) * shard_size, n)
        rows = order[lo:hi]
        if planned:
            emb = embedder.embed_tokens([tokens[r] for r in rows], [keys[r] for r in rows])
        else:
            emb = embedder.embed([conversations[r] for r in rows], progress=False)
        if not bool(torch.isfinite(emb).all()):
            raise DataError(f"{embedder.name}: non-finite embedding in shard {i} "
                            f"(rows {sorted(rows)[:5]}...)")
        tmp = shard_dir / f"{i:06d}.{rank}.tmp.npy"
        np.save(tmp, emb.numpy().astype(np.float32))
        durable.replace_file(tmp, shard_dir / f"{i:06d}.npy")  # on disk before it counts as done
        if world == 1:  # several processes would race on the manifest; their files say it
            manifest["done"] = sorted([*manifest["done"], i])
            if stats is not None:
                manifest["stats"] = stats.as_dict()
            atomic_write_text(manifest_path, json.dumps(manifest))
        if stats is not None:
            bar.set_postfix_str(stats.postfix(), refresh=False)
        bar.update(hi - lo)
    bar.close()
    if world > 1:
        collectives.barrier("the shards of every process")
        if rank != 0:
            collectives.barrier("the merge of the shards by process 0")
            return np.load(target, mmap_mode="r")
    matrix = _merge(shard_dir, shards, shard_size, n, target, fingerprint, manifest_path, order)
    if world > 1:
        collectives.barrier("the merge of the shards by process 0")
    return matrix


def _finished(target: Path, manifest_path: Path, fingerprint: str, n: int) -> bool:
    """Whether ``target`` already holds these inputs' embeddings (a finished run)."""
    if not target.is_file() or manifest_path.is_file():
        return False
    marker = target.with_suffix(".fingerprint")
    return (marker.is_file() and marker.read_text() == fingerprint
            and np.load(target, mmap_mode="r").shape[0] == n)


def _open_manifest(shard_dir: Path, fingerprint: str, n: int, shard_size: int,
                   order: str) -> dict[str, Any]:
    """The run's manifest: created, or checked to be over the same inputs in the same order."""
    manifest_path = shard_dir / MANIFEST
    if manifest_path.is_file():
        old = _read_manifest(manifest_path)
        if (old.get("fingerprint"), old.get("rows"), old.get("shard_size")) != (fingerprint, n, shard_size):
            raise DataError(f"{manifest_path}: holds a run over other inputs, another embedder or "
                            "another shard size; use a new output directory or delete this one")
        if old.get("order", order) != order:
            raise DataError(f"{manifest_path}: holds a run with another row order (other "
                            "--max-length, --shared-prompts or --legacy-batching); rerun with the "
                            "same settings or use a new output directory")
        return old
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"fingerprint": fingerprint, "rows": n, "shard_size": shard_size, "order": order,
                "done": []}
    atomic_write_text(manifest_path, json.dumps(manifest))
    return manifest


def _merge(shard_dir: Path, shards: range, shard_size: int, n: int, target: Path,
           fingerprint: str, manifest_path: Path, order: list[int]) -> np.ndarray:
    """The shards, each row back in its input place, as ``target``; the shards are removed."""
    missing = [i for i in shards if not (shard_dir / f"{i:06d}.npy").is_file()]
    if missing:
        raise DataError(f"{shard_dir}: shards {missing[:5]} are missing; rerun to finish them")
    dims = {read_shard(shard_dir / f"{i:06d}.npy", min(shard_size, n - i * shard_size),
                       header_only=True).shape[1] for i in shards}
    if len(dims) != 1:
        raise DataError(f"{shard_dir}: shards of different widths {sorted(dims)}")
    tmp = target.with_suffix(".tmp.npy")
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dims.pop()))
    try:
        for i in shards:  # every shard read whole and checked before it joins the matrix
            matrix[order[i * shard_size:(i + 1) * shard_size]] = read_shard(
                shard_dir / f"{i:06d}.npy", min(shard_size, n - i * shard_size))
        matrix.flush()
    except BaseException:
        del matrix
        tmp.unlink(missing_ok=True)
        raise
    del matrix
    durable.replace_file(tmp, target)
    atomic_write_text(target.with_suffix(".fingerprint"), fingerprint)
    manifest_path.unlink()
    shutil.rmtree(shard_dir)  # the shards, and any partial file a killed process left
    return np.load(target, mmap_mode="r")


def read_shard(path: Path, rows: int, *, header_only: bool = False) -> np.ndarray:
    """An embedding shard [rows, d] float32, or a one-line `DataError` naming it: empty or
    cut short (a power loss), not a .npy, another shape or type, or (read whole) NaN/inf."""
    hint = "delete it and rerun to embed it again"
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (EOFError, ValueError, OSError) as err:
        raise DataError(f"{path}: not a whole .npy shard ({type(err).__name__}: "
                        f"{str(err) or 'empty file'}); {hint}") from None
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != rows:
        raise DataError(f"{path}: holds {array.dtype} {array.shape}, expected float32 [{rows}, d];"
                        f" {hint}")
    if header_only:
        return array
    data = np.asarray(array)
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: row {int(np.argmin(finite))} is not finite (NaN or inf); {hint}")
    return data


def _read_manifest(path: Path) -> dict[str, Any]:
    """The embedding manifest, with its fields checked (one line naming the file)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a JSON manifest ({err}); delete the shard directory to "
                        "start again") from None
    fields = {"fingerprint": str, "rows": int, "shard_size": int, "done": list}
    bad = [k for k, kind in fields.items() if not isinstance(doc, dict)
           or not isinstance(doc.get(k), kind) or isinstance(doc.get(k), bool)]
    if not bad and not all(isinstance(i, int) and not isinstance(i, bool)
                           and 0 <= i * doc["shard_size"] < max(doc["rows"], 1)
                           for i in doc["done"]):
        bad = ["done"]
    if bad:
        raise DataError(f"{path}: field {bad[0]!r} is missing or malformed (fingerprint: str, "
                        "rows, shard_size: int, done: shard numbers); delete the shard directory "
                        "to start again")
    return doc


def embed_personalllm(rows: Sequence[dict[str, Any]], embedder: Any, out_dir: str | Path,
                      split: str, *, shard_size: int = 512, progress: bool = True) -> Path:
    """PersonalLLM's reference layout: ``{split}.safetensors`` + ``{split}.csv`` scores.

    ``rows`` are hub rows (``prompt``, ``response_1..8`` and the 80 score
    columns); row 8p+i of the embeddings is [user: prompt p, assistant:
    response i+1], as the reference's prepare.py orders them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conversations = []
    for p, row in enumerate(rows):
        missing = [k for k in ("prompt", *(f"response_{i}" for i in range(1, RESPONSES + 1)))
                   if not isinstance(row.get(k), str)]
        if missing:
            raise DataError(f"PersonalLLM {split} row {p}: missing text field(s) {missing}")
        for i in range(1, RESPONSES + 1):
            conversations.append([{"role": "user", "content": row["prompt"]},
                                  {"role": "assistant", "content": row[f"response_{i}"]}])
    fingerprint = _fingerprint(embedder, conversations)
    matrix = embed_resumable(conversations, embedder, out / f"shards-{split}", fingerprint,
                             out / f"{split}.embeddings.npy", shard_size=shard_size,
                             progress=progress)
    if _rank() != 0:  # process 0 writes the rest
        return out
    _save_tensors({"embeddings": torch.from_numpy(np.array(matrix))}, out / f"{split}.safetensors")
    lines = [["prompt_index", *SCORE_COLUMNS]]
    for p, row in enumerate(rows):
        lines.append([str(p), *("" if row.get(c) is None else repr(float(row[c]))
                                for c in SCORE_COLUMNS)])
    atomic_write_text(out / f"{split}.csv", _csv_text(lines))
    if embedder.v_ref is not None:
        _save_tensors({"v_ref": embedder.v_ref.contiguous()}, out / "v_ref.safetensors")
    if getattr(embedder, "stats", None) is not None:
        atomic_write_text(out / f"{split}.embeddings.json", json.dumps(
            {"model": embedder.name, "rows": len(conversations), "fingerprint": fingerprint,
             "throughput": embedder.stats.as_dict(), "settings": getattr(embedder, "settings", {})},
            indent=1))
    return out


# -- helpers -------------------------------------------------------------------
def _rank() -> int:
    return collectives.rank() if collectives.joined() else 0


def _world() -> int:
    return collectives.size() if collectives.joined() else 1


def _fingerprint(embedder: Any, conversations: Sequence[Sequence[Message]]) -> str:
    digest = hashlib.sha256(f"{embedder.kind}\0{embedder.name}\0".encode())
    max_length = getattr(embedder, "settings", {}).get("max_length")
    if max_length is not None:  # a cut changes the embeddings
        digest.update(f"max_length={max_length}\0".encode())
    for conv in conversations:
        digest.update(json.dumps(conv, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _comparisons_csv(pairs, rows, records, with_split: bool) -> str:
    header = ["user_id", "prompt_id", "response_a", "response_b", "label"]
    extra = sorted({k for p in pairs for k in p.extra} - {*header, "split"})
    lines = [header + (["split"] if with_split else []) + extra]
    for pair, (a, b) in zip(pairs, rows):
        line = [str(pair.user_id), records[a]["prompt_id"], records[a]["response_id"],
                records[b]["response_id"], "a"]
        lines.append(line + ([pair.split or ""] if with_split else [])
                     + ["" if pair.extra.get(k) is None else str(pair.extra[k]) for k in extra])
    return _csv_text(lines)


def _csv_text(lines: list[list[str]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


