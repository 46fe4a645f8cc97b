"""The raw TL;DR, PRISM and PersonalLLM files: found locally, in the cache, or downloaded.

Why not ``datasets.load_dataset(repo)``: ``openai/summarize_from_feedback``
is a script-based data set, and ``datasets`` 4 and later refuse scripts. The
hub's parquet conversion (revision ``refs/convert/parquet``) holds the same
rows for every source, and PRISM and PersonalLLM also publish their data
files. So the files are fetched one by one with ``huggingface_hub`` (which
``datasets`` brings) and read with ``pyarrow`` or as JSON lines:

=============  ==============================================  =========================================
source         first choice                                    fallback
=============  ==============================================  =========================================
tldr           ``comparisons/{split}/NNNN.parquet``            the script's raw files:
               at ``refs/convert/parquet``                     ``comparisons/*.json`` (JSON lines, split
                                                               from each row's ``split``: ``train``;
                                                               ``valid1``/``valid2`` = validation)
prism          ``conversations.jsonl`` (main)                  ``conversations/train/NNNN.parquet``
personalllm    ``data/{split}-NNNNN-of-NNNNN.parquet`` (main)  ``default/{split}/NNNN.parquet``
=============  ==============================================  =========================================

A local directory (``data_dir``, ``lore-prepare embed --data-dir``) with the
same relative paths is read instead, for machines without network.

Failing fast: the libraries are checked first; then, unless
``HF_HUB_OFFLINE`` is set, the endpoint (``HF_ENDPOINT``, default
huggingface.co) must accept a TCP connection within ``CONNECT_TIMEOUT``
seconds; offline, only files already in the Hugging Face cache are used.
Each failure is one ``DataError`` line saying what to do, raised before any
model is loaded (the command reads its rows first).
"""

from __future__ import annotations

import importlib
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import DataError
from .textio import json_lines

CONNECT_TIMEOUT = 5.0
CONVERSION = "refs/convert/parquet"
TLDR_RAW_URL = "https://openaipublic.blob.core.windows.net/summarize-from-feedback/dataset/comparisons"
# the comparison files the hub's summarize_from_feedback.py script reads, in its order
TLDR_RAW_FILES = (
    *(f"batch{i}.json" for i in (3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 6, 7, 8,
                                 9)),
    "batch0_cnndm.json", "cnndm0.json", "cnndm2.json", "edit_b2_eval_test.json")
TLDR_SPLITS = {"train": ("train",), "validation": ("valid1", "valid2")}
OFFLINE_HINT = ("pass --data-dir DIR with the files laid out as on the hub "
                "(docs/datasets.md), or fill the Hugging Face cache on a machine with network")


@dataclass(frozen=True)
class Source:
    """Where one hub data set's files are."""

    name: str
    repo: str
    splits: tuple[str, ...]


SOURCES = {
    "tldr": Source("tldr", "openai/summarize_from_feedback", ("train", "validation")),
    "prism": Source("prism", "HannahRoseKirk/prism-alignment", ("train",)),
    "personalllm": Source("personalllm", "namkoong-lab/PersonalLLM", ("train", "test")),
}


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_cache() -> str | None:
    """The Hugging Face cache named by the environment now (huggingface_hub reads it once,
    at import), or None for the library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """One TCP connection to ``url``'s host, or one line saying it cannot be reached."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return
    except OSError as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise DataError(f"cannot reach {parts.scheme}://{parts.netloc} ({reason}); "
                        f"{OFFLINE_HINT}, then set HF_HUB_OFFLINE=1") from None


def require(module: str, extra: str = "hub") -> Any:
    """Import an optional library or fail with the install line."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading the hub data sets needs {module.split('.')[0]}: "
                        f"pip install 'lore-datasets[{extra}]'") from None


def source_rows(name: str, split: str, *, data_dir: str | Path | None = None,
                limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows of one split as plain dicts, and a line saying which files they came from."""
    if name not in SOURCES:
        raise DataError(f"unknown hub source {name!r}; expected one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    if split not in source.splits:
        raise DataError(f"{source.repo}: no split {split!r}; expected one of "
                        f"{', '.join(source.splits)}")
    files = (_local_files(source, split, Path(data_dir)) if data_dir is not None
             else _hub_files(source, split))
    rows: list[dict[str, Any]] = []
    for path, kind in files:
        rows += _read(path, kind, name, split, None if limit is None else limit - len(rows))
        if limit is not None and len(rows) >= limit:
            break
    return rows[:limit] if limit is not None else rows, ", ".join(str(p) for p, _ in files)


# -- local copies ---------------------------------------------------------------
def _local_files(source: Source, split: str, root: Path) -> list[tuple[Path, str]]:
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found")
    candidates = _layouts(source, split)
    for kind, patterns in candidates:
        # in the order of the patterns (the script's file order), then by name
        found = list(dict.fromkeys(p for pattern in patterns for p in sorted(root.glob(pattern))))
        if found:
            if kind == "parquet":
                require("pyarrow.parquet")
            return [(p, kind) for p in found]
    expected = " or ".join(p for _, patterns in candidates for p in patterns)
    raise DataError(f"{root}: no {source.name} {split} files (expected {expected}, as on the hub)")


def _layouts(source: Source, split: str) -> list[tuple[str, tuple[str, ...]]]:
    """(kind, glob patterns) in order of preference, relative to the data set's root."""
    if source.name == "tldr":
        return [("parquet", (f"comparisons/{split}/*.parquet",)),
                ("tldr-raw", tuple(f"comparisons/{f}" for f in TLDR_RAW_FILES))]
    if source.name == "prism":
        return [("jsonl", ("conversations.jsonl",)),
                ("parquet", ("conversations/train/*.parquet",))]
    return [("parquet", (f"data/{split}-*.parquet",)),
            ("parquet", (f"default/{split}/*.parquet",))]


# -- the hub --------------------------------------------------------------------
def _hub_files(source: Source, split: str) -> list[tuple[Path, str]]:
    hf = require("huggingface_hub")
    require("pyarrow.parquet")
    if not offline():
        check_reachable(endpoint())
    tried: list[str] = []
    for revision, kind, paths in _hub_layouts(source, split, hf, tried):
        got = [_download(hf, source.repo, revision, p) for p in paths]
        if got and all(g is not None for g in got):
            return [(g, kind) for g in got]
        tried.append(f"{revision}:{paths[0] if paths else '?'}")
    if source.name == "tldr":
        return _tldr_raw()
    where = "the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline() else source.repo
    raise DataError(f"{source.repo}: no {split} files found in {where} (tried "
                    f"{', '.join(tried)}); {OFFLINE_HINT}")


def _hub_layouts(source: Source, split: str, hf: Any, tried: list[str]):
    """(revision, kind, repo paths) to try, listed from the repo online, guessed offline."""
    wanted = {
        "tldr": [(CONVERSION, "parquet", f"comparisons/{split}/", "0000.parquet")],
        "prism": [("main", "jsonl", "conversations.jsonl", ""),
                  (CONVERSION, "parquet", "conversations/train/", "0000.parquet")],
        "personalllm": [("main", "parquet", f"data/{split}-", "00000-of-00001.parquet"),
                        (CONVERSION, "parquet", f"default/{split}/", "0000.parquet")],
    }[source.name]
    for revision, kind, prefix, first in wanted:
        if offline():
            yield revision, kind, [prefix + first]
            continue
        try:
            names = hf.HfApi(endpoint=endpoint()).list_repo_files(
                source.repo, repo_type="dataset", revision=revision)
        except Exception as err:  # a missing revision, a private repo, a network error
            tried.append(f"{revision} ({type(err).__name__})")
            continue
        found = sorted(n for n in names if n == prefix or (n.startswith(prefix)
                                                           and n.endswith(f".{kind}")))
        if found:
            yield revision, kind, found


def _download(hf: Any, repo: str, revision: str, path: str) -> Path | None:
    try:
        return Path(hf.hf_hub_download(repo, path, repo_type="dataset", revision=revision,
                                       local_files_only=offline(), etag_timeout=CONNECT_TIMEOUT,
                                       endpoint=endpoint(), cache_dir=hub_cache()))
    except Exception as err:  # not found, or not cached offline
        if not offline() and type(err).__name__ not in ("EntryNotFoundError",
                                                        "RemoteEntryNotFoundError",
                                                        "RevisionNotFoundError"):
            raise DataError(f"{repo}/{path}@{revision}: download failed "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
        return None


def _tldr_raw() -> list[tuple[Path, str]]:
    """The script's own JSON-lines files, cached under ~/.cache/lore/summarize_from_feedback."""
    cache = Path(os.environ.get("LORE_CACHE", Path.home() / ".cache" / "lore"))
    folder = cache / "summarize_from_feedback" / "comparisons"
    missing = [f for f in TLDR_RAW_FILES if not (folder / f).is_file()]
    if missing and offline():
        raise DataError(f"openai/summarize_from_feedback: no parquet conversion in the cache and "
                        f"{len(missing)} raw files missing in {folder}; {OFFLINE_HINT}")
    if missing:
        check_reachable(TLDR_RAW_URL)
        folder.mkdir(parents=True, exist_ok=True)
    for name in missing:
        tmp = folder / f".{name}.{os.getpid()}.part"  # torchrun: every process may fetch
        try:
            with urllib.request.urlopen(f"{TLDR_RAW_URL}/{name}", timeout=60) as response, \
                    tmp.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as err:
            raise DataError(f"{TLDR_RAW_URL}/{name}: download failed ({err})") from None
        tmp.replace(folder / name)
    return [(folder / f, "tldr-raw") for f in TLDR_RAW_FILES]


# -- reading --------------------------------------------------------------------
def _read(path: Path, kind: str, name: str, split: str, limit: int | None) -> list[dict[str, Any]]:
    if kind == "parquet":
        pq = require("pyarrow.parquet")
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several unrelated types for bad files
            raise DataError(f"{path}: not a readable parquet file ({err})") from None
        if limit is not None:
            table = table.slice(0, limit)
        return table.to_pylist()
    rows = []
    for line_no, row in json_lines(path, skip_blank=True):
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {line_no}: expected a JSON object")
        if kind == "tldr-raw":
            if row.get("split") not in (*TLDR_SPLITS["train"], *TLDR_SPLITS["validation"]):
                raise DataError(f"{path}, line {line_no}: split {row.get('split')!r} is "
                                "neither train, valid1 nor valid2")
            if row["split"] not in TLDR_SPLITS[split]:
                continue
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows
