"""The personalized reward model: a shared basis V and per-user logits W.

    r_u(x, y) = phi(x, y) . V softmax(W_u)

Margins are reported without tau (tau only scales the training logit, it
cannot change a sign). Users are addressed by their original string ids,
never by position, so a model and a data set built separately still agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lore_kernels
from lore_datasets import PreferencePairs

CHECKPOINT_FORMAT = 1


class UnknownUserError(KeyError):
    """A user id the model was neither trained on nor adapted to."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class PersonalRewardModel(nn.Module):
    """V [d, K] shared by all users, W [N, K] logits, one row per known user.

    rank 0 is the reference reward head (V = v_ref, every weight 1); rank 1
    the Bradley-Terry model (softmax of one logit is 1 for every user).
    ``seen`` marks users whose rows were trained jointly with V (the rest
    were fitted few-shot on a frozen V).
    """

    def __init__(
        self,
        V: torch.Tensor,
        W: torch.Tensor,
        user_ids: Sequence[str],
        *,
        tau: float = 0.01,
        rank: int | None = None,
        v_ref: torch.Tensor | None = None,
        seen: Sequence[bool] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if V.ndim != 2 or W.ndim != 2 or V.shape[1] != W.shape[1]:
            raise ValueError(f"V [d, K] and W [N, K] disagree: {tuple(V.shape)} vs {tuple(W.shape)}")
        if W.shape[0] != len(user_ids):
            raise ValueError(f"W has {W.shape[0]} rows for {len(user_ids)} user ids")
        self.V = nn.Parameter(V.detach().to(torch.float32).clone())
        self.W = nn.Parameter(W.detach().to(torch.float32).clone())
        self.user_ids = [str(u) for u in user_ids]
        if len(set(self.user_ids)) != len(self.user_ids):
            raise ValueError("user_ids contains duplicates")
        self._index = {u: i for i, u in enumerate(self.user_ids)}
        self.tau = float(tau)
        self.rank = int(V.shape[1]) if rank is None else int(rank)
        self.seen = [True] * len(self.user_ids) if seen is None else [bool(s) for s in seen]
        self.meta = dict(meta or {})
        self.register_buffer(
            "v_ref", None if v_ref is None else v_ref.detach().to(torch.float32).clone()
        )

    # -- shape --------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.V.shape[0]

    @property
    def kept_rank(self) -> int:
        """Number of basis columns (after pruning)."""
        return self.V.shape[1]

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def weights(self) -> torch.Tensor:
        """Per-user mixture weights softmax(W) [N, K], rows on the simplex."""
        return torch.softmax(self.W, dim=1)

    def user_index(self, user_ids: Sequence[str]) -> torch.Tensor:
        unknown = [u for u in map(str, user_ids) if u not in self._index]
        if unknown:
            raise UnknownUserError(
                f"unknown user(s) {unknown[:5]}: not trained on nor adapted "
                f"(the model knows {self.num_users} users)"
            )
        return torch.tensor([self._index[str(u)] for u in user_ids], dtype=torch.int64)

    # -- rewards ------------------------------------------------------------
    def user_head(self, user: str) -> torch.Tensor:
        """The user's reward direction V softmax(W_u) in R^d."""
        idx = self.user_index([user])
        return (self.V @ self.weights()[idx].squeeze(0)).detach()

    @torch.no_grad()
    def margin(self, pairs: PreferencePairs, user: str | None = None) -> torch.Tensor:
        """Reward margin z . V softmax(W_u) of every row [M] (fp32).

        Each row is scored as its own user, or, with ``user``, every row as
        that one user (say, another person's pairs through your head).
        """
        Z = pairs.features.to(self.V.device)
        if user is not None:
            return lore_kernels.project(Z, self.user_head(user)[:, None]).squeeze(1)
        S = self.weights()[self.user_index(pairs.user_ids).to(self.W.device)]
        P = lore_kernels.project(Z, self.V)
        return (P * S[pairs.user.to(self.V.device)]).sum(dim=1)

    @torch.no_grad()
    def score(self, embeddings: torch.Tensor, user: str) -> torch.Tensor:
        """Rewards phi . V softmax(W_u) of a batch of response embeddings [B, d] -> [B]."""
        if embeddings.ndim == 1:
            embeddings = embeddings[None]
        if embeddings.shape[-1] != self.dim:
            raise ValueError(f"embeddings have dim {embeddings.shape[-1]}, the model {self.dim}")
        return embeddings.to(self.V.device, torch.float32) @ self.user_head(user)

    # -- users --------------------------------------------------------------
    def with_users(self, user_ids: Sequence[str], W: torch.Tensor) -> PersonalRewardModel:
        """A copy that also knows ``user_ids`` (fitted rows ``W``, not seen in training)."""
        clash = [u for u in map(str, user_ids) if u in self._index]
        if clash:
            raise ValueError(f"users already in the model: {clash[:5]}")
        return PersonalRewardModel(
            self.V,
            torch.cat([self.W.detach(), W.to(self.W)], dim=0),
            self.user_ids + [str(u) for u in user_ids],
            tau=self.tau,
            rank=self.rank,
            v_ref=self.v_ref,
            seen=self.seen + [False] * len(user_ids),
            meta=self.meta,
        )

    def adapt(
        self,
        user: str,
        data: PreferencePairs | torch.Tensor,
        *,
        steps: int | None = None,
        lr: float | None = None,
        seed: int = 0,
        replace: bool = False,
    ) -> PersonalRewardModel:
        """Fit ``user``'s K logits on the frozen basis and add them to this model, in place.

        ``data`` is the user's pairs: a `PreferencePairs` (their rows, or all
        rows when it holds a single user) or a raw [n, d] tensor of
        chosen-minus-rejected rows. ``steps``/``lr`` default to the few-shot
        settings the model was trained with, so an adapted user is fitted
        exactly like the unseen users of an evaluation. A user already in
        the model is refitted only with ``replace=True``. Returns ``self``;
        ``save()`` stores the new row.
        """
        from .trainer import fit_few_shot  # the trainer imports this module

        user = str(user)
        if user in self._index and not replace:
            kind = "trained jointly with V" if self.seen[self._index[user]] else "already adapted"
            raise ValueError(f"user {user!r} is {kind}; pass replace=True to refit their weights")
        pairs = self._user_pairs(user, data)
        defaults = self.meta.get("train_config", {})
        W = fit_few_shot(
            self.V.detach(),
            pairs,
            steps=defaults.get("fewshot_steps", 500) if steps is None else steps,
            lr=defaults.get("fewshot_lr", 0.1) if lr is None else lr,
            tau=self.tau,
            seed=seed,
        ).to(self.W)
        with torch.no_grad():
            if user in self._index:
                i = self._index[user]
                self.W[i] = W[0]
                self.seen[i] = False
            else:
                self.W = nn.Parameter(torch.cat([self.W.detach(), W], dim=0))
                self._index[user] = len(self.user_ids)
                self.user_ids.append(user)
                self.seen.append(False)
        return self

    def _user_pairs(self, user: str, data: PreferencePairs | torch.Tensor) -> PreferencePairs:
        """One user's rows as a single-user `PreferencePairs`, checked."""
        if isinstance(data, PreferencePairs):
            if user in data.user_ids:
                data = data.select_users([user])
            elif data.num_users != 1:
                raise ValueError(
                    f"the pairs hold {data.num_users} users and not {user!r}; pass that user's "
                    "rows (or pairs with a single user)"
                )
            features = data.features
        elif isinstance(data, torch.Tensor):
            features = data[None] if data.ndim == 1 else data
        else:
            raise TypeError(f"adapt() takes PreferencePairs or an [n, d] tensor, not {type(data).__name__}")
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"user {user!r}: rows must be [n, {self.dim}], got {tuple(features.shape)}"
            )
        if features.shape[0] == 0:
            raise ValueError(f"user {user!r}: no pairs to adapt on")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"user {user!r}: the rows contain NaN or Inf")
        n = features.shape[0]
        return PreferencePairs(features, torch.zeros(n, dtype=torch.int64, device=features.device), [user])

    def export_reward_head(
        self,
        user: str,
        directory: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        backbone: str | None = None,
    ) -> Path:
        """Write ``user``'s head as a standard reward head: ``score.weight`` [1, d].

        A Hugging Face ``AutoModelForSequenceClassification`` reward model
        (num_labels=1) computes ``hidden @ score.weight.T``; when the
        embeddings this model was trained on are that backbone's last-token
        final hidden states, loading this tensor into ``score.weight`` makes
        it score responses exactly as ``self.score(., user)`` does.
        """
        head = self.user_head(user)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"score.weight": head[None].to(dtype).cpu().contiguous()},
                  directory / "reward_head.safetensors")
        config = {
            "format": "lore-reward-head",
            "format_version": 1,
            "user": str(user),
            "backbone": backbone or self.meta.get("embedder"),
            "dataset": self.meta.get("dataset"),
            "rank": self.rank,
            "kept_rank": self.kept_rank,
            "dim": self.dim,
            "tau": self.tau,
            "tensor": {"name": "score.weight", "shape": [1, self.dim], "dtype": str(dtype).removeprefix("torch.")},
            "bias": None,
            "usage": (
                "reward(x, y) = h(x, y) . score.weight[0], h = the backbone's final hidden state "
                "of the last token (the input of its score head). Load it with "
                "model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1); "
                "model.score.weight.data.copy_(safetensors.torch.load_file("
                "'reward_head.safetensors')['score.weight']). Valid only if this model's "
                "embeddings were that backbone's hidden states. P(y1 preferred to y2) = "
                "sigmoid(tau * (reward(x, y1) - reward(x, y2)))."
            ),
        }
        (directory / "reward_head.json").write_text(json.dumps(config, indent=1))
        return directory

    # -- storage ------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """A directory with ``model.safetensors`` (V, W, v_ref) and ``config.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"V": self.V.detach().cpu().contiguous(), "W": self.W.detach().cpu().contiguous()}
        if self.v_ref is not None:
            tensors["v_ref"] = self.v_ref.cpu().contiguous()
        save_file(tensors, directory / "model.safetensors")
        config = {
            "format": CHECKPOINT_FORMAT,
            "rank": self.rank,
            "kept_rank": self.kept_rank,
            "dim": self.dim,
            "tau": self.tau,
            "user_ids": self.user_ids,
            "seen": self.seen,
            "meta": self.meta,
        }
        (directory / "config.json").write_text(json.dumps(config, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> PersonalRewardModel:
        directory = Path(directory)
        for name in ("model.safetensors", "config.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: not a lore checkpoint (missing {name})")
        config = json.loads((directory / "config.json").read_text())
        tensors = load_file(directory / "model.safetensors", device=str(device))
        return cls(
            tensors["V"],
            tensors["W"],
            config["user_ids"],
            tau=config["tau"],
            rank=config["rank"],
            v_ref=tensors.get("v_ref"),
            seen=config.get("seen"),
            meta=config.get("meta"),
        )

    def extra_repr(self) -> str:
        return f"rank={self.rank}, kept_rank={self.kept_rank}, dim={self.dim}, users={self.num_users}"
