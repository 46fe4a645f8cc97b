"""results.json: what was run, on what, with which code, and what came out.

The file is the contract other tools read (docs/architecture.md, "Results
files"): ``config`` (the resolved settings: ``train``, ``data``, ``split``,
``Ks``, ``alphas``, ...), ``dataset`` (the benchmark's meta), ``versions``,
``backend``, ``device`` and ``runs``, one entry per (K, alpha) with the
accuracy on the four splits (keyed by split name), ``kept_rank`` and
``train_seconds``; a skipped cell says why in ``skipped``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lore_kernels
from lore_datasets import SPLITS, DataError
from lore_datasets.runtime.outputs import atomic_write, atomic_write_text

RESULTS_FORMAT = 2
# Format 1 keyed two of the four settings by other names than their splits.
_FORMAT1_KEYS = {"seen_unseen_prompts": "seen_test", "unseen_unseen_prompts": "unseen_test"}
PACKAGES = ("lore-kernels", "lore-datasets", "lore-train", "lore-eval", "torch", "numpy")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_description(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def new_results(config: dict[str, Any], dataset_meta: dict[str, Any], device: str) -> dict[str, Any]:
    return {
        "format": RESULTS_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "dataset": dataset_meta,
        "versions": versions(),
        "backend": lore_kernels.backend(device),
        "device": device_description(device),
        "runs": [],
    }


def data_fingerprint(benchmark: Any) -> dict[str, Any]:
    """What identifies a benchmark's data exactly: per split, its sizes and a SHA-256 of its
    user ids, rows per user and feature bytes (and of v_ref). `--resume` compares it
    before any finished cell or training state is reused."""
    doc: dict[str, Any] = {}
    for name in SPLITS:
        part = benchmark.split(name)
        digest = hashlib.sha256("\n".join(part.user_ids).encode())
        digest.update(part.pairs_per_user().numpy().tobytes())
        digest.update(str(part.features.dtype).encode())
        features = part.features.detach().cpu().contiguous()
        if features.numel():
            digest.update(memoryview(features.view(torch.uint8).numpy()))
        doc[name] = {"pairs": part.num_pairs, "users": part.num_users, "dim": part.dim,
                     "sha256": digest.hexdigest()}
    v_ref = getattr(benchmark, "v_ref", None)
    doc["v_ref_sha256"] = None if v_ref is None else hashlib.sha256(
        memoryview(v_ref.detach().cpu().contiguous().view(torch.uint8).numpy())).hexdigest()
    return doc


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write a results document as JSON, atomically (a kill never leaves half a file)."""
    return atomic_write_text(path, json.dumps(results, indent=1, default=_jsonable))


RESULTS_CSV_COLUMNS = ("K", "alpha", "kept_rank", "setting", "mean", "std", "n_users",
                       "train_seconds", "skipped", "temperature", "log_loss", "brier", "ece")


def write_results_csv(results: dict[str, Any], path: str | Path) -> Path:
    """One row per (K, alpha, setting), for spreadsheets and dataframes; a
    skipped cell is one row with its reason."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(RESULTS_CSV_COLUMNS)
            for run in results["runs"]:
                if run.get("skipped"):
                    writer.writerow([run["K"], run["alpha"], "", "", "", "", "", "",
                                     run["skipped"], *[""] * 4])
                    continue
                calibration = run.get("calibration")
                for key in SPLITS:
                    cell = run[key]
                    cal = [""] * 4
                    if calibration:  # calibrated scores (at the fitted temperature)
                        c = calibration[key]["calibrated"]
                        cal = [calibration["temperature"], c["log_loss"], c["brier"], c["ece"]]
                    writer.writerow([run["K"], run["alpha"], run["kept_rank"], key, cell["mean"],
                                     cell["std"], cell["n_users"], run["train_seconds"], "", *cal])

    return atomic_write(path, write)


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json (``path`` or ``path/results.json``), upgraded to the current format."""
    doc = load_document(path, "results.json", "runs", "results")
    if doc.get("format", 1) < 2:
        for run in doc["runs"]:
            for old, new in _FORMAT1_KEYS.items():
                if old in run:
                    run[new] = run.pop(old)
        doc["format"] = RESULTS_FORMAT
    return doc


def load_document(path: str | Path, filename: str, key: str, kind: str, hint: str = "") -> dict[str, Any]:
    """Read a lore JSON file (``path`` or ``path/filename``), checking it has ``key``."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {filename} here{hint}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a lore {kind} file (not JSON: {err})") from None
    if not isinstance(doc, dict) or key not in doc:
        raise DataError(f"{path}: not a lore {kind} file (no {key!r})")
    return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (Path, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
