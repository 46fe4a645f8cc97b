"""Checkpoint files: ``model.safetensors`` (V, W, v_ref) and ``config.json``.

This module only reads and writes the files (and upgrades older layouts);
`PersonalRewardModel.save`/`load` turn a model into them and back.
``config.json`` holds ``format``, ``K``, ``kept_rank``, ``dim``, ``tau``,
``user_ids``, ``seen``, ``train_config`` (the resolved `TrainConfig`, or None)
and ``meta`` (dataset, embedder, kept columns). See docs/architecture.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_FORMAT = 2
FILES = ("model.safetensors", "config.json")


def write_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write the tensors and ``config`` (``format`` is added) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()},
              directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"format": CHECKPOINT_FORMAT, **config}, indent=1))
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint, in the current layout."""
    directory = Path(directory)
    for name in FILES:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: not a lore checkpoint (missing {name})")
    return _upgrade(json.loads((directory / "config.json").read_text()))


def read_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a checkpoint directory."""
    config = read_checkpoint_config(directory)
    return load_file(Path(directory) / "model.safetensors", device=str(device)), config


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
