"""Training-state checkpoints: what a stopped fit needs to continue exactly where it was.

One file, ``train_state.safetensors``, written atomically every
``checkpoint_every`` steps: the tensors V and W, every Adam moment and step
counter, and torch's CPU random state; its metadata holds (as JSON) the
number of steps done, the loss curve so far, the `TrainConfig` and a
fingerprint of the training pairs. A resumed fit restores all of it, so it
takes the same steps, bit for bit, as one that never stopped. Resuming with
other settings or other data is an error naming the file and what differs.

The file holds tensors and JSON only (no pickle), like every lore file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lore_datasets import DataError, PreferencePairs
from lore_datasets.runtime.outputs import atomic_write

from .config import TrainConfig

STATE_FILE = "train_state.safetensors"
STATE_FORMAT = 1


@dataclass
class TrainState:
    """A fit after ``done`` steps (see the module docstring)."""

    done: int
    V: torch.Tensor
    W: torch.Tensor
    optimizers: list[dict[str, Any]]  # torch optimizer state_dicts, in the trainer's order
    history_steps: list[int] = field(default_factory=list)
    history_loss: list[float] = field(default_factory=list)
    rng: torch.Tensor | None = None


def fingerprint(pairs: PreferencePairs) -> dict[str, Any]:
    """What identifies the training pairs cheaply: sizes, users and a checksum of the rows."""
    users = hashlib.sha256("\n".join(pairs.user_ids).encode())
    users.update(pairs.pairs_per_user().numpy().tobytes())  # which rows each user owns
    return {"num_pairs": pairs.num_pairs, "num_users": pairs.num_users, "dim": pairs.dim,
            "users_sha256": users.hexdigest()[:16],
            "feature_sum": float(pairs.features.sum(dtype=torch.float64))}


def save_state(directory: str | Path, state: TrainState, config: TrainConfig,
               pairs_fingerprint: dict[str, Any]) -> Path:
    """Write ``state`` as ``directory/train_state.safetensors`` (atomically)."""
    tensors: dict[str, torch.Tensor] = {"V": state.V, "W": state.W}
    groups = []
    for o, sd in enumerate(state.optimizers):
        for index, moments in sd["state"].items():
            for key, value in moments.items():
                tensors[f"opt{o}.{index}.{key}"] = torch.as_tensor(value)
        groups.append(sd["param_groups"])
    if state.rng is not None:
        tensors["rng"] = state.rng
    meta = {"format": STATE_FORMAT, "done": state.done, "config": config.to_dict(),
            "data": pairs_fingerprint, "param_groups": groups,
            "history": {"steps": state.history_steps, "loss": state.history_loss}}
    tensors = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
    path = Path(directory) / STATE_FILE
    return atomic_write(path, lambda tmp: save_file(tensors, tmp,
                                                    metadata={"lore": json.dumps(meta)}))


def load_state(directory: str | Path, config: TrainConfig,
               pairs_fingerprint: dict[str, Any]) -> TrainState | None:
    """The state in ``directory`` (None if there is none), checked against this fit."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["lore"])
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as err:
        raise DataError(f"{path}: not a readable lore training state ({err})") from None
    if meta.get("format") != STATE_FORMAT:
        raise DataError(f"{path}: training state format {meta.get('format')!r} is not "
                        f"{STATE_FORMAT}")
    stored = meta["config"]
    wanted = config.to_dict()
    for key in wanted:
        if stored.get(key) != wanted[key]:
            raise DataError(f"{path}: cannot resume: it was trained with {key}={stored.get(key)!r}, "
                            f"this run has {key}={wanted[key]!r}")
    for key, value in pairs_fingerprint.items():
        if meta["data"].get(key) != value:
            raise DataError(f"{path}: cannot resume: the training pairs differ ({key})")
    optimizers = []
    for o, groups in enumerate(meta["param_groups"]):
        state: dict[int, dict[str, torch.Tensor]] = {}
        prefix = f"opt{o}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, name = key[len(prefix):].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        optimizers.append({"state": state, "param_groups": groups})
    done = int(meta["done"])
    if not 0 < done <= config.steps:
        raise DataError(f"{path}: {done} steps done, outside 1..{config.steps}")
    return TrainState(done, tensors["V"], tensors["W"], optimizers,
                      list(meta["history"]["steps"]), list(meta["history"]["loss"]),
                      tensors.get("rng"))


def remove_state(directory: str | Path) -> None:
    """Forget the state once the fit's result is safely written elsewhere."""
    (Path(directory) / STATE_FILE).unlink(missing_ok=True)
