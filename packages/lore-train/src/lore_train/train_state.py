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
ADAM_MOMENTS = ("step", "exp_avg", "exp_avg_sq")  # what each parameter's optimizer state holds
META_KEYS = {"format": int, "done": int, "config": dict, "data": dict, "param_groups": list,
             "history": dict}


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
    source: str = "the training state"  # the file it was read from, for errors

    def check_fits(self, V: torch.Tensor, W: torch.Tensor,
                   optimizers: list[torch.optim.Optimizer]) -> None:
        """A `DataError` naming the file unless the state is complete for this fit: V and W
        of its shapes, every Adam moment (step, exp_avg, exp_avg_sq) of every parameter in
        the parameter's shape, and a whole random state."""
        where = self.source
        if self.V.shape != V.shape or self.W.shape != W.shape:
            raise DataError(f"{where}: holds V {tuple(self.V.shape)}, W {tuple(self.W.shape)}; "
                            f"this fit has {tuple(V.shape)}, {tuple(W.shape)}")
        if len(self.optimizers) != len(optimizers):
            raise DataError(f"{where}: holds {len(self.optimizers)} optimizer state(s), this fit "
                            f"has {len(optimizers)}")
        for o, (opt, saved) in enumerate(zip(optimizers, self.optimizers, strict=True)):
            params = [p for group in opt.param_groups for p in group["params"]]
            groups = saved["param_groups"]
            if (not isinstance(groups, list) or len(groups) != len(opt.param_groups)
                    or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                               for g in groups)
                    or sorted(i for g in groups for i in g["params"]) != list(range(len(params)))):
                raise DataError(f"{where}: optimizer {o}'s parameter groups do not match this fit")
            for index, param in enumerate(params):
                moments = saved["state"].get(index, {})
                missing = [k for k in ADAM_MOMENTS if k not in moments]
                if missing:
                    raise DataError(f"{where}: optimizer {o} parameter {index} has no "
                                    f"{', '.join(missing)} (an incomplete training state)")
                for key in ("exp_avg", "exp_avg_sq"):
                    if moments[key].shape != param.shape:
                        raise DataError(f"{where}: opt{o}.{index}.{key} is "
                                        f"{tuple(moments[key].shape)}, the parameter "
                                        f"{tuple(param.shape)}")
        rng = torch.get_rng_state()
        if self.rng is None or self.rng.dtype != rng.dtype or self.rng.shape != rng.shape:
            got = "none" if self.rng is None else f"{self.rng.dtype} {tuple(self.rng.shape)}"
            raise DataError(f"{where}: the random state is {got}, not {rng.dtype} "
                            f"{tuple(rng.shape)} (an incomplete training state)")


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
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its 'lore' metadata is not a JSON object")
    for key, kind in META_KEYS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise DataError(f"{path}: metadata {key!r} is missing or not a {kind.__name__} "
                            "(an incomplete training state)")
    history = meta["history"]
    if (not isinstance(history.get("steps"), list) or not isinstance(history.get("loss"), list)
            or len(history["steps"]) != len(history["loss"])):
        raise DataError(f"{path}: metadata 'history' needs lists 'steps' and 'loss' of one length")
    for key in ("V", "W", "rng"):
        if key not in tensors:
            raise DataError(f"{path}: no tensor {key!r} (an incomplete training state)")
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
                index, _, name = key[len(prefix):].partition(".")
                if not index.isdigit() or not name:
                    raise DataError(f"{path}: tensor {key!r} is not opt<i>.<param>.<moment>")
                state.setdefault(int(index), {})[name] = value
        optimizers.append({"state": state, "param_groups": groups})
    done = int(meta["done"])
    if not 0 < done <= config.steps:
        raise DataError(f"{path}: {done} steps done, outside 1..{config.steps}")
    return TrainState(done, tensors["V"], tensors["W"], optimizers,
                      list(meta["history"]["steps"]), list(meta["history"]["loss"]),
                      tensors.get("rng"), source=str(path))


def remove_state(directory: str | Path) -> None:
    """Forget the state once the fit's result is safely written elsewhere."""
    (Path(directory) / STATE_FILE).unlink(missing_ok=True)
