"""Checkpoint files: ``model.safetensors`` (V, W, v_ref, posterior_precision) and ``config.json``.

This module only reads and writes the files (and upgrades older layouts);
`PersonalRewardModel.save`/`load` turn a model into them and back.
``config.json`` holds ``format``, ``K``, ``kept_rank``, ``dim``, ``tau``,
``user_ids``, ``seen``, ``posterior_users`` (whose Laplace precisions
``posterior_precision`` holds, in that order), ``train_config`` (the resolved `TrainConfig`, or None)
and ``meta`` (dataset, embedder, kept columns). See docs/architecture.md.
"""

from __future__ import annotations

import json
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
    `lore_datasets.durable.swap_in`), so a full disk or a kill leaves the old
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
