"""Checkpoint files: ``model.safetensors`` (V, W, v_ref, posterior_precision) and ``config.json``.

This module reads and writes the files (and upgrades older layouts) and
checks them against each other (`check_checkpoint`);
`PersonalRewardModel.save`/`load` turn a model into them and back.
``config.json`` holds ``format``, ``K``, ``kept_rank``, ``dim``, ``tau``,
``user_ids``, ``seen``, ``posterior_users`` (whose Laplace precisions
``posterior_precision`` holds, in that order), ``train_config`` (the resolved `TrainConfig`, or None)
and ``meta`` (dataset, embedder, kept columns). See docs/architecture.md.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lore_datasets import DataError
from lore_datasets.runtime import durable
from lore_datasets.runtime.outputs import atomic_write, atomic_write_text

CHECKPOINT_FORMAT = 2
FILES = ("model.safetensors", "config.json")
# config.json keys a checkpoint cannot be read without, and their JSON types
REQUIRED = {"K": int, "dim": int, "tau": (int, float), "user_ids": list}


def write_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write the tensors and ``config`` (``format`` is added) into ``directory``.

    Each file is written atomically, tensors first: a checkpoint whose
    config.json is there has its tensors in full. An existing checkpoint is
    replaced as a whole (the new one is written beside it and swapped in,
    `lore_datasets.runtime.durable.swap_in`), so a full disk or a kill leaves the old
    one as it was, never new tensors with an old config.
    """
    directory = Path(directory)
    cpu = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
    durable.recover(directory)
    replacing = directory.is_dir() and any(directory.iterdir())
    work = durable.new_dir(directory, "new") if replacing else directory
    try:
        atomic_write(work / "model.safetensors", lambda tmp: save_file(cpu, tmp))
        atomic_write_text(work / "config.json",
                          json.dumps({"format": CHECKPOINT_FORMAT, **config}, indent=1))
        if replacing:
            durable.swap_in(work, directory)
    finally:
        if replacing:
            shutil.rmtree(work, ignore_errors=True)
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint, in the current layout; malformed is a `DataError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    for name in FILES:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: not a lore checkpoint (missing {name})")
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not JSON ({err})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("format", 1) < 2 and "rank" not in config:
        raise DataError(f"{path}: missing key 'K'")
    config = _upgrade(config)
    for key, kind in REQUIRED.items():
        if key not in config:
            raise DataError(f"{path}: missing key {key!r}")
        if not isinstance(config[key], kind) or isinstance(config[key], bool):
            raise DataError(f"{path}: {key} is {config[key]!r}, not a {_name(kind)}")
    return config


def read_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a checkpoint directory; unreadable tensors are a `DataError`."""
    config = read_checkpoint_config(directory)
    path = Path(directory) / "model.safetensors"
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    return tensors, config


def _name(kind: type | tuple[type, ...]) -> str:
    return "number" if isinstance(kind, tuple) else {int: "integer", list: "list"}[kind]


def _upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """Format 1 called K ``rank`` and kept the train config in ``meta``."""
    if config.get("format", 1) >= 2:
        return config
    config = dict(config)
    config["K"] = config.pop("rank")
    meta = dict(config.get("meta") or {})
    train = meta.pop("train_config", None)
    if train is not None:
        train = dict(train)
        train["K"] = train.pop("rank")
    config.update(format=CHECKPOINT_FORMAT, meta=meta, train_config=train)
    return config


def check_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Refuse a checkpoint whose config.json and model.safetensors disagree (see `load`)."""
    cfg, st = directory / "config.json", directory / "model.safetensors"
    unknown = sorted(set(tensors) - {"V", "W", "v_ref", "posterior_precision"})
    missing = [k for k in ("V", "W") if k not in tensors]
    if missing or unknown:
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unknown[0]!r}"
        raise DataError(f"{st}: {what} (a lore checkpoint holds V, W and optionally v_ref "
                        "and posterior_precision)")
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise DataError(f"{st}: tensor {name!r} has dtype {t.dtype}, expected a float type")
    V, W, v_ref = tensors["V"], tensors["W"], tensors.get("v_ref")
    if V.ndim != 2 or W.ndim != 2 or (v_ref is not None and v_ref.ndim != 1):
        raise DataError(f"{st}: V {tuple(V.shape)}, W {tuple(W.shape)}: expected V [d, K] and "
                        "W [users, K]" + ("" if v_ref is None else " and v_ref [d]"))
    users, K, dim = config["user_ids"], config["K"], config["dim"]
    kept = config.get("kept_rank", V.shape[1])
    checks = [
        (V.shape[0] == dim, f"dim is {dim} but V has {V.shape[0]} rows"),
        (V.shape[1] == kept, f"kept_rank is {kept} but V has {V.shape[1]} columns"),
        (W.shape[1] == V.shape[1], f"W has {W.shape[1]} columns, V {V.shape[1]}"),
        (W.shape[0] == len(users), f"{len(users)} user_ids but W has {W.shape[0]} rows"),
        (K >= 0, f"K is {K}"),
        (K != 0 or (V.shape[1] == 1 and v_ref is not None),
         "K is 0 (the reference head) but the tensors are not one column with v_ref"),
        (K == 0 or V.shape[1] <= K, f"K is {K} but V has {V.shape[1]} columns (more than K)"),
        (v_ref is None or v_ref.shape[0] == dim, f"v_ref has {0 if v_ref is None else v_ref.shape[0]} "
         f"entries, dim is {dim}"),
        (all(isinstance(u, str) for u in users), "user_ids must be strings"),
        (len(set(users)) == len(users), "user_ids has duplicates"),
        (config.get("seen") is None or len(config["seen"]) == len(users),
         f"seen has {len(config.get('seen') or [])} entries for {len(users)} users"),
        (config["tau"] > 0 and math.isfinite(config["tau"]), f"tau is {config['tau']}"),
    ]
    for ok, problem in checks + _posterior_checks(tensors, config):
        if not ok:
            raise DataError(f"{cfg}: {problem} (the checkpoint's files disagree)")
    for name in ("V", "W", "posterior_precision"):
        if name not in tensors:
            continue
        if not bool(torch.isfinite(tensors[name]).all()):
            raise DataError(f"{st}: tensor {name!r} holds NaN or inf")


def _posterior_checks(tensors: dict[str, torch.Tensor], config: dict[str, Any]
                      ) -> list[tuple[bool, str]]:
    """The stored posteriors agree with the users and the basis (see `check_checkpoint`)."""
    users = config.get("posterior_users") or []
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        return [(False, "posterior_users must be a list of user ids")]
    H = tensors.get("posterior_precision")
    kept = tensors["V"].shape[1]
    known = set(config["user_ids"])
    strangers = [u for u in users if u not in known]
    count = 0 if H is None else H.shape[0]
    return [
        (not strangers, f"posterior_users names users the model does not have: {strangers[:3]}"),
        (len(set(users)) == len(users), "posterior_users has duplicates"),
        (count == len(users), f"{len(users)} posterior_users but {count} posterior precisions"),
        (H is None or tuple(H.shape[1:]) == (kept, kept),
         f"posterior_precision is {None if H is None else tuple(H.shape)}, expected "
         f"[{len(users)}, {kept}, {kept}]"),
    ]
