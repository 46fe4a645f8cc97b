"""The users files of an export: ``lore_users.safetensors`` and ``lore_users.json``.

What a K-output reward model needs besides its weights to give each user a
reward: every known user's weights s_u = softmax(W_u) (and logits, and the
Laplace precision of those with a posterior), the population prior a new
user starts from, the basis in fp32, the backbone's own head (v_ref), and in
the JSON the user ids, tau, label noise, temperature, few-shot settings and
the embedder recipe. `hf_export` writes them; `PersonalReward` reads them.
Reading checks the two files against each other and names the one at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lore_datasets import DataError

from .model import PersonalRewardModel

USERS_TENSORS = "lore_users.safetensors"
USERS_JSON = "lore_users.json"
FORMAT = "lore-personal-reward"
FORMAT_VERSION = 1
LAYOUTS = ("full", "head_only")


def write_users(directory: Path, model: PersonalRewardModel, basis: torch.Tensor,
                v_ref: torch.Tensor | None, *, recipe: dict[str, Any], layout: str,
                backbone: str | None, dtype: str, checkpoint: str | None = None) -> None:
    """``lore_users.safetensors`` and ``lore_users.json`` (see the module doc)."""
    tensors, doc = users_record(model, basis, v_ref, recipe=recipe, layout=layout,
                                backbone=backbone, dtype=dtype, checkpoint=checkpoint)
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(directory / USERS_TENSORS))
    (directory / USERS_JSON).write_text(json.dumps(doc, indent=1), encoding="utf-8")


def users_record(model: PersonalRewardModel, basis: torch.Tensor, v_ref: torch.Tensor | None,
                 *, recipe: dict[str, Any], layout: str | None, backbone: str | None,
                 dtype: str, checkpoint: str | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The users files' contents (tensors, JSON document) for ``model`` with ``basis`` [K, d]."""
    K = basis.shape[0]
    alpha = _population_prior(model, K)
    posterior_users = [u for u in model.user_ids if u in model._posteriors]
    tensors = {"weights": model.weights().detach().float().cpu(),
               "logits": model.W.detach().float().cpu(),
               "prior_alpha": alpha.float().cpu(),
               "basis": basis.float().cpu()}
    if posterior_users:
        tensors["precision"] = torch.stack([model._posteriors[u].to(torch.float64).cpu()
                                            for u in posterior_users])
    if v_ref is not None:
        tensors["v_ref"] = v_ref.float().cpu()
    train = model.train_config
    fewshot = None if train is None else {
        "steps": train.fewshot_steps, "lr": train.fewshot_lr, "reduction": train.reduction,
        "prior": train.fewshot_prior, "solver": train.fewshot_solver}
    doc = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "layout": layout,
        "backbone": backbone, "dtype": dtype, "K": K, "lore_K": model.K, "dim": model.dim,
        "tau": model.tau, "label_noise": model.likelihood.label_noise,
        "temperature": model.meta.get("temperature"), "prior_scale": model.prior_scale,
        "user_ids": model.user_ids, "seen": model.seen, "posterior_users": posterior_users,
        "fewshot": fewshot, "embedder": recipe,
        "source": {"checkpoint": checkpoint, "dataset": model.meta.get("dataset")},
        "reward": "reward(x, y, u) = sum_k logits_k(x, y) * weights[u, k]; the K logits are the "
                  "model's outputs (score.weight = V^T)",
    }
    return tensors, doc


def _population_prior(model: PersonalRewardModel, K: int) -> torch.Tensor:
    """The Dirichlet prior of a new user (uniform 1s for K <= 1 or no seen users)."""
    if K <= 1 or not any(model.seen):
        return torch.ones(K)
    return model.population_prior().detach().float().cpu()


def read_users(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) of an export directory, checked against each other; a `DataError`
    naming the file when they are missing, unreadable or disagree."""
    directory = Path(directory)
    jpath, tpath = directory / USERS_JSON, directory / USERS_TENSORS
    for path in (jpath, tpath):
        if not path.is_file():
            raise DataError(f"{path}: missing (not a lore-export hf directory)")
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{jpath}: not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{jpath}: not a {FORMAT} file")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{jpath}: format_version {doc['format_version']} is newer than this lore "
                        f"reads ({FORMAT_VERSION})")
    try:
        tensors = load_file(str(tpath))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise DataError(f"{tpath}: not a readable safetensors file ({err})") from None
    K, users = doc.get("K"), doc.get("user_ids")
    problems = [
        (isinstance(K, int) and K >= 1, f"K is {K!r}"),
        (isinstance(users, list) and all(isinstance(u, str) for u in users),
         "user_ids must be a list of strings"),
        (doc.get("layout") in LAYOUTS, f"layout is {doc.get('layout')!r}"),
        (all(k in tensors for k in ("weights", "logits", "prior_alpha", "basis")),
         "missing tensors (weights, logits, prior_alpha, basis)"),
    ]
    for ok, problem in problems:
        if not ok:
            raise DataError(f"{jpath}: {problem}")
    posterior_users = doc.get("posterior_users") or []
    shapes = [("weights", (len(users), K)), ("logits", (len(users), K)), ("prior_alpha", (K,)),
              ("basis", (K, doc.get("dim")))]
    if posterior_users:
        shapes.append(("precision", (len(posterior_users), K, K)))
    for name, shape in shapes:
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else None
            raise DataError(f"{tpath}: {name} is {got}, {jpath.name} says {shape}")
    return tensors, doc
