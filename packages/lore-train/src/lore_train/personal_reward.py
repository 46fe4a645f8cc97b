"""Text in, personalized rewards out: a ``lore-export hf`` directory as a reward function.

    pr = PersonalReward.from_pretrained("personal-rm/")
    pr.rewards(prompts, completions, users)                 # list[float], best-of-n
    GRPOTrainer(..., reward_funcs=pr)                       # TRL: a user_id column
    pr.add_user("new", [{"prompt": p, "chosen": a, "rejected": b}, ...])

One backbone forward gives a response's K basis rewards (the exported model's
K logits); a user's reward is their dot product with the user's weights s_u,
so a batch mixes users freely. Text is rendered and pooled by
`lore_datasets.embed.RewardModelEmbedder` -- the code that made the training
embeddings -- so a reward here equals the embedded-then-scored one.

A new user is fitted MAP under the population prior from comparisons (text,
or basis-reward differences a server already has), on the K logits only; an
unknown user gets the population's mean user (``unknown_user="prior"``) or an
`UnknownUserError`. Reward std is the delta method on the Laplace posterior.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lore_datasets import DataError, PreferencePairs
from lore_datasets.embed import RewardModelEmbedder
from lore_kernels import Likelihood

from . import posterior as posterior_lib
from .config import FewShotSettings
from .conversations import comparison_texts, conversation, token_batches
from .elicitation import greedy_information_gain
from .hf_export import install_basis_head, load_tokenizer
from .model import PersonalRewardModel, UnknownUserError
from .newton import newton_map
from .prior import prior_logits
from .solver import fit_few_shot
from .users_file import read_users, users_record

Message = dict[str, str]
UNKNOWN_USER = ("prior", "error")


class PersonalReward:
    """A K-output reward model plus every known user's weights (see the module doc)."""

    def __init__(self, model: Any, tokenizer: Any, tensors: dict[str, torch.Tensor],
                 doc: dict[str, Any], *, device: str | torch.device = "cpu",
                 unknown_user: str = "prior", max_batch_tokens: int = 16384,
                 embedder: Any = None) -> None:
        """Use `from_pretrained` (an export) or `from_checkpoint` (a checkpoint and the
        embedder that made its embeddings) rather than this."""
        if unknown_user not in UNKNOWN_USER:
            raise ValueError(f"unknown_user must be 'prior' or 'error', got {unknown_user!r}")
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.K = int(doc["K"])
        self.device = torch.device(device)
        self.unknown_user = unknown_user
        self.max_batch_tokens = int(max_batch_tokens)
        self.recipe = dict(doc.get("embedder") or {})
        self.likelihood = Likelihood(float(doc["tau"]), float(doc.get("label_noise") or 0.0))
        self.temperature = doc.get("temperature")
        self.fewshot = dict(doc.get("fewshot") or {})
        if embedder is None:  # a K-output reward model: rendered and pooled by the embedder's code
            self.model = model.to(device).eval()
            self.encoder = RewardModelEmbedder(
                self.model, tokenizer, max_length=self.recipe.get("max_length"),
                name=doc.get("backbone") or "lore export", outputs=self.K)
        else:  # any embedder with .embed(conversations) -> phi [n, d] (a sentence encoder)
            self.model = embedder.model
            self.encoder = embedder
            tokenizer = embedder.tokenizer
        self.tokenizer = tokenizer
        self._embedder = embedder
        if self.encoder.dim != int(doc["dim"]):
            raise DataError(f"the embedder's dimension is {self.encoder.dim}, the basis's "
                            f"{doc['dim']}")
        # the head in fp32 on the model's device: basis rewards are not rounded to bf16
        head_device = next(self.model.parameters()).device
        self._head = tensors["basis"].to(head_device, torch.float32)
        self.alpha = tensors["prior_alpha"].to(torch.float32)
        self._logits: dict[str, torch.Tensor] = {
            u: w.to(torch.float64) for u, w in zip(doc["user_ids"], tensors["logits"])}
        precision = tensors.get("precision")
        self._precision: dict[str, torch.Tensor] = {} if precision is None else {
            u: h.to(torch.float64) for u, h in zip(doc.get("posterior_users") or [], precision)}
        self.v_ref = tensors.get("v_ref")

    # -- loading ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, unknown_user: str = "prior",
                        max_batch_tokens: int = 16384) -> PersonalReward:
        """Load an export (full or head-only layout). ``dtype`` defaults to the export's."""
        from transformers import AutoModelForSequenceClassification

        directory = Path(directory)
        tensors, doc = read_users(directory)
        dtype = dtype or getattr(torch, str(doc.get("dtype") or "float32"))
        if doc["layout"] == "full":
            source = directory
            model = AutoModelForSequenceClassification.from_pretrained(directory, dtype=dtype)
        else:
            source = doc.get("backbone")
            if not source:
                raise DataError(f"{directory / 'lore_users.json'}: head-only layout names no backbone")
            model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype)
            install_basis_head(model, tensors["basis"])
        tokenizer = load_tokenizer(source)
        if getattr(model, "score", None) is None or model.score.out_features != int(doc["K"]):
            raise DataError(f"{source}: the score layer has "
                            f"{getattr(getattr(model, 'score', None), 'out_features', 0)} outputs, "
                            f"lore_users.json says K = {doc['K']}")
        return cls(model, tokenizer, tensors, doc, device=device, unknown_user=unknown_user,
                   max_batch_tokens=max_batch_tokens)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, embedder: Any, *,
                        unknown_user: str = "prior") -> PersonalReward:
        """A lore checkpoint with the embedder that made its embeddings (say a
        `lore_datasets.embed.SentenceEmbedder`, which has no score layer to export):
        rewards are embedder.embed(conversations) @ V . s_u. The embedder's device is used."""
        model = PersonalRewardModel.load(checkpoint)
        recorded = model.meta.get("embedder_recipe") or {}
        recipe = getattr(embedder, "recipe", None) or {}
        for key in ("kind", "model"):
            if recorded.get(key) is not None and recipe.get(key) not in (None, recorded[key]):
                raise DataError(f"{checkpoint}: its embeddings were made by {key} "
                                f"{recorded[key]!r}, the embedder given is {recipe[key]!r}")
        if embedder.dim != model.dim:
            raise DataError(f"{checkpoint}: embeddings of dimension {model.dim}, the embedder "
                            f"gives {embedder.dim}")
        tensors, doc = users_record(model, model.V.detach().T.contiguous(), model.v_ref,
                                    recipe=recipe or recorded, layout=None,
                                    backbone=recipe.get("model"), dtype="float32",
                                    checkpoint=str(checkpoint))
        return cls(None, None, tensors, doc, unknown_user=unknown_user,
                   device=next(embedder.model.parameters()).device, embedder=embedder)

    # -- users -------------------------------------------------------------------
    @property
    def user_ids(self) -> list[str]:
        return list(self._logits)

    def user_weights(self, user: str) -> torch.Tensor:
        """s_u [K] (fp32): the stored weights, or the prior mean for an unknown user."""
        return torch.softmax(self._user_logits(user), dim=0).to(torch.float32)

    def add_user(self, user: str, comparisons: Sequence[Any] | None = None, *,
                 basis_diffs: torch.Tensor | None = None, replace: bool = True) -> torch.Tensor:
        """Fit ``user`` MAP under the population prior; returns their weights s_u [K].

        ``comparisons``: {"prompt", "chosen", "rejected"} dicts or 3-tuples;
        ``basis_diffs`` [n, K]: basis(chosen) - basis(rejected) already computed.
        Neither: the population's mean user. The posterior precision is kept.
        """
        user = _check_user(user)
        if user in self._logits and not replace:
            raise ValueError(f"user {user!r} is already known; pass replace=True to refit them")
        if comparisons is not None and basis_diffs is not None:
            raise ValueError("give comparisons or basis_diffs, not both")
        if comparisons is not None:
            Q = self._comparison_diffs(user, comparisons)
        elif basis_diffs is not None:
            Q = torch.as_tensor(basis_diffs, dtype=torch.float32).cpu()
            if Q.ndim != 2 or Q.shape[1] != self.K:
                raise ValueError(f"user {user!r}: basis_diffs must be [n, {self.K}], "
                                 f"got {tuple(Q.shape)}")
            if not bool(torch.isfinite(Q).all()):
                raise ValueError(f"user {user!r}: basis_diffs contain NaN or Inf")
        else:
            Q = torch.zeros(0, self.K)
        w, H = self._fit_user(user, Q)
        self._logits[user] = w
        self._precision[user] = H
        return self.user_weights(user)

    def remove_user(self, user: str) -> None:
        user = _check_user(user)
        if user not in self._logits:
            raise UnknownUserError(f"unknown user {user!r}: nothing to remove")
        del self._logits[user]
        self._precision.pop(user, None)

    # -- rewards -----------------------------------------------------------------
    def basis_rewards(self, prompts: Sequence[Any], completions: Sequence[Any]) -> torch.Tensor:
        """[B, K] fp32 on CPU: each (prompt, completion)'s K basis rewards."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions "
                             "(one prompt per completion)")
        conversations = [conversation(p, c, i) for i, (p, c) in enumerate(zip(prompts,
                                                                               completions))]
        return self._basis_of(conversations)

    def rewards_from_basis(self, basis: torch.Tensor, users: Sequence[str], *,
                           return_std: bool = False) -> torch.Tensor | tuple[torch.Tensor,
                                                                              torch.Tensor]:
        """Rewards [B] = basis[b] . s_{users[b]} (and their posterior std by the delta method)."""
        basis = torch.as_tensor(basis, dtype=torch.float32).cpu()
        if basis.ndim != 2 or basis.shape[1] != self.K:
            raise ValueError(f"basis must be [B, {self.K}], got {tuple(basis.shape)}")
        if len(users) != basis.shape[0]:
            raise ValueError(f"{len(users)} user ids for {basis.shape[0]} rows (one per row)")
        names = [_check_user(u) for u in users]
        distinct = list(dict.fromkeys(names))
        row = {u: i for i, u in enumerate(distinct)}
        owner = torch.tensor([row[u] for u in names], dtype=torch.int64)
        W = torch.stack([self._user_logits(u) for u in distinct]) if distinct else \
            torch.zeros(0, self.K, dtype=torch.float64)
        S = torch.softmax(W, dim=1)
        rewards = (basis.to(torch.float64) * S[owner]).sum(dim=1).to(torch.float32)
        if not return_std:
            return rewards
        cov = posterior_lib.covariance(torch.stack([self._user_precision(u) for u in distinct]))
        return rewards, _delta_std(basis, S, cov, owner)

    def rewards(self, prompts: Sequence[Any], completions: Sequence[Any], users: Sequence[str], *,
                return_std: bool = False) -> list[float] | tuple[list[float], list[float]]:
        """Each completion's reward for its user (best-of-n: argmax over one prompt's)."""
        if len(users) != len(completions):
            raise ValueError(f"{len(users)} user ids for {len(completions)} completions")
        for u in users:  # a bad id fails before the backbone runs
            _check_user(u)
        out = self.rewards_from_basis(self.basis_rewards(prompts, completions), users,
                                      return_std=return_std)
        if return_std:
            return out[0].tolist(), out[1].tolist()
        return out.tolist()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 user_id: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        """The TRL reward-function convention: the data set's ``user_id`` column arrives
        as a keyword; other columns (completion_ids, trainer_state, ...) are ignored."""
        if user_id is None:
            raise ValueError("PersonalReward needs a 'user_id' column in the data set (TRL "
                             "passes each row's user as user_id=[...])")
        return self.rewards(prompts, completions, user_id)

    # -- which comparisons to ask ---------------------------------------------------
    def suggest_pairs(self, user: str, prompt: Any, candidates: Sequence[Any],
                      n: int) -> list[tuple[int, int]]:
        """The ``n`` pairs of ``candidates`` (responses to ``prompt``) whose answer would
        teach most about ``user`` (indices into candidates)."""
        basis = self.basis_rewards([prompt] * len(candidates), list(candidates))
        return self.suggest_pairs_from_basis(user, basis, n)

    def suggest_pairs_from_basis(self, user: str, basis: torch.Tensor,
                                 n: int) -> list[tuple[int, int]]:
        """Greedy expected information gain over all pairs of candidates with basis [C, K]."""
        user = _check_user(user)
        basis = torch.as_tensor(basis, dtype=torch.float32).cpu()
        if basis.ndim != 2 or basis.shape[1] != self.K:
            raise ValueError(f"basis must be [C, {self.K}], got {tuple(basis.shape)}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        first, second = torch.triu_indices(basis.shape[0], basis.shape[0], offset=1)
        if first.numel() == 0 or n == 0:
            return []
        Q = basis[first] - basis[second]
        W = self._user_logits(user)[None]
        cov = posterior_lib.covariance(self._user_precision(user)[None])
        picks, _ = greedy_information_gain(Q[None], W, cov, self.likelihood, min(n, len(Q)))
        return [(int(first[p]), int(second[p])) for p in picks[0].tolist() if p >= 0]

    # -- internals ----------------------------------------------------------------
    def _user_logits(self, user: str) -> torch.Tensor:
        user = _check_user(user)
        if user in self._logits:
            return self._logits[user]
        if self.unknown_user == "error":
            raise UnknownUserError(f"unknown user {user!r}: not in this model's "
                                   f"{len(self._logits)} users (add_user() them first)")
        return prior_logits(self.alpha.to(torch.float64)) if self.K > 1 else \
            torch.zeros(self.K, dtype=torch.float64)

    def _user_precision(self, user: str) -> torch.Tensor:
        """The Laplace precision [K, K]; a user without one (unknown, or trained jointly
        and stored without it) gets the prior's at their logits."""
        if user in self._precision:
            return self._precision[user]
        return posterior_lib.laplace_precision(
            torch.zeros(0, self.K), torch.zeros(0, dtype=torch.int64),
            self._user_logits(user)[None], self.likelihood, self.alpha)[0]

    def _fit_user(self, user: str, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAP logits [K] and Laplace precision [K, K] of one user from basis diffs Q [n, K].

        The one place the few-shot solver is called, with the settings the
        basis was trained with: the exact MAP by damped Newton (`newton_map`,
        the default) or the reference's Adam steps; the prior is the
        population's Dirichlet. Q is already Z V, so the basis is the identity.
        """
        alpha = self.alpha if self.K > 1 else None
        if self.fewshot.get("solver", "newton") == "newton":
            result = newton_map(Q.to(torch.float64), torch.zeros(len(Q), dtype=torch.int64), 1,
                                self.likelihood, prior=alpha)
            return result.W[0], result.precision[0]
        pairs = PreferencePairs(Q, torch.zeros(len(Q), dtype=torch.int64), [user])
        stored = {k: self.fewshot[k] for k in ("steps", "lr", "reduction")
                  if self.fewshot.get(k) is not None}
        settings = FewShotSettings(**stored, likelihood=self.likelihood, solver="adam")
        W = fit_few_shot(torch.eye(self.K), pairs, settings, prior=alpha)
        H = posterior_lib.laplace_precision(Q, pairs.user, W, self.likelihood, self.alpha)
        return W[0].to(torch.float64), H[0]

    def _comparison_diffs(self, user: str, comparisons: Sequence[Any]) -> torch.Tensor:
        prompts, chosen, rejected = comparison_texts(user, comparisons)
        if not prompts:
            return torch.zeros(0, self.K)
        basis = self.basis_rewards(prompts + prompts, chosen + rejected)
        return basis[:len(prompts)] - basis[len(prompts):]

    def _basis_of(self, conversations: list[list[Message]]) -> torch.Tensor:
        if self._embedder is not None:
            phi = self._embedder.embed(conversations, progress=False)
            return (phi.to(self._head) @ self._head.T).cpu()
        tokens = [self.encoder.render(c) for c in conversations]
        out = torch.empty(len(tokens), self.K)
        for idx in token_batches([len(t) for t in tokens], self.max_batch_tokens):
            hidden = self.encoder.encode([tokens[i] for i in idx])
            out[idx] = (hidden.to(torch.float32) @ self._head.T).cpu()
        return out


def _check_user(user: Any) -> str:
    if not isinstance(user, str):
        raise ValueError(f"user id {user!r} is a {type(user).__name__}, not a string")
    return user


def _delta_std(basis: torch.Tensor, S: torch.Tensor, cov: torch.Tensor,
               owner: torch.Tensor) -> torch.Tensor:
    """`posterior.delta_std` batched over rows of many users: row b of user owner[b] has
    d(q . s)/dw = J q = s * (q - q . s) and variance (J q)^T cov (J q)."""
    s = S[owner]
    q = basis.to(torch.float64)
    G = s * (q - (q * s).sum(dim=1, keepdim=True))
    var = torch.einsum("bk,bkl,bl->b", G, cov[owner], G)
    return var.clamp(min=0).sqrt().to(torch.float32)
