"""The personalized reward model: a shared basis V and per-user logits W.

    r_u(x, y) = phi(x, y) . V softmax(W_u)

Margins are reported without tau (tau only scales the training logit, it
cannot change a sign). Users are addressed by their original string ids,
never by position, so a model and a data set built separately still agree.

This module is the model itself (parameters, margins, scores, users); the
few-shot solvers (`solver`, `newton`), the checkpoint files and their checks
(`checkpoint`) and the Hugging Face head files (`export`) live in their own
modules, which do not import this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lore_kernels
from lore_datasets import DataError, PreferencePairs
from lore_kernels import Likelihood

from . import checks
from . import posterior as posterior_lib
from . import prior as prior_lib
from .checkpoint import check_checkpoint, read_checkpoint, write_checkpoint
from .config import FEWSHOT_PRIORS, TrainConfig
from .elicitation import greedy_information_gain
from .export import write_reward_head
from .newton import newton_map
from .prior_scale import adjust as adjust_prior
from .solver import fit_few_shot, single_user_pairs


class UnknownUserError(KeyError):
    """A user id the model was neither trained on nor adapted to."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class PersonalRewardModel(nn.Module):
    """V [d, K] shared by all users, W [N, K] logits, one row per known user.

    K = 0 is the reference reward head (V = v_ref, every weight 1); K = 1
    the Bradley-Terry model (softmax of one logit is 1 for every user).
    ``seen`` marks users whose rows were trained jointly with V (the rest
    were fitted few-shot on a frozen V). ``train_config`` is the config the
    basis was fitted with (None for a model built by hand); it also gives
    the few-shot settings `adapt` uses.
    """

    def __init__(
        self,
        V: torch.Tensor,
        W: torch.Tensor,
        user_ids: Sequence[str],
        *,
        tau: float = 0.01,
        K: int | None = None,
        v_ref: torch.Tensor | None = None,
        seen: Sequence[bool] | None = None,
        meta: dict[str, Any] | None = None,
        train_config: TrainConfig | None = None,
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
        self.K = int(V.shape[1]) if K is None else int(K)
        self.seen = [True] * len(self.user_ids) if seen is None else [bool(s) for s in seen]
        self.meta = dict(meta or {})
        self.train_config = train_config
        self._posteriors: dict[str, torch.Tensor] = {}  # user -> Laplace precision [K, K]
        self._covariances: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # user -> (H, H^-1)
        self._prior_cache: tuple[tuple[int, int, int], torch.Tensor] | None = None
        self.register_buffer(
            "v_ref", None if v_ref is None else v_ref.detach().to(torch.float32).clone()
        )

    # -- shape --------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.V.shape[0]

    @property
    def likelihood(self) -> Likelihood:
        """The label model: the model's tau and its config's label noise (0 without a
        config). Every posterior, probability and adapted user uses it."""
        noise = self.train_config.label_noise if self.train_config is not None else 0.0
        return Likelihood(self.tau, noise)

    @property
    def kept_rank(self) -> int:
        """Number of basis columns after pruning (K without pruning, 1 for K = 0)."""
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
            S = self.weights()[self.user_index([user]).to(self.W.device)]
            rows = torch.zeros(pairs.num_pairs, dtype=torch.int64, device=Z.device)
        else:
            S = self.weights()[self.user_index(pairs.user_ids).to(self.W.device)]
            rows = pairs.user.to(Z.device)
        return lore_kernels.lowrank_margin(Z, rows, self.V.detach(), S)

    @torch.no_grad()
    def score(
        self, embeddings: torch.Tensor, user: str, *, return_std: bool = False, method: str = "delta"
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Rewards phi . V softmax(W_u) of a batch of response embeddings [B, d] -> [B].

        ``return_std=True`` also returns each reward's std under the user's
        posterior (see `posterior`), as ``(rewards, std)``: by the delta
        method (``method="delta"``, closed form: var = (J q)^T Sigma (J q),
        `posterior.delta_std`) or over seeded posterior draws (``"draws"``).
        """
        embeddings = self._embeddings(embeddings)
        rewards = embeddings @ self.user_head(user)
        if not return_std:
            return rewards
        Q = embeddings @ self.V.detach()
        idx = self.user_index([user])
        if method == "delta":
            _, std = posterior_lib.delta_std(Q, self.W.detach()[idx][0], self._covariance(user))
        elif method == "draws":
            _, std = posterior_lib.reward_moments(Q, self.posterior(user),
                                                  torch.zeros(len(Q), dtype=torch.int64))
        else:
            raise ValueError(f"method must be 'delta' or 'draws', got {method!r}")
        return rewards, std.to(rewards)

    # -- cold start: prior, posterior, preference probability, elicitation --
    @property
    def prior_scale(self) -> float:
        """The scale c on the population prior's concentration: the config's
        ``fewshot_prior_scale`` when > 0, else (0: empirical Bayes, or no config)
        the chosen one in ``meta["prior_scale"]`` (`lore_train.prior_scale`), else 1."""
        if self.train_config is not None and self.train_config.fewshot_prior_scale > 0:
            return float(self.train_config.fewshot_prior_scale)
        return float(self.meta.get("prior_scale", 1.0))

    def population_prior(self, *, scaled: bool = True,
                         seen_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Dirichlet concentration [K] fitted to the seen users' weights (`lore_train.prior`),
        times `prior_scale` with its mean moved toward uniform by ``meta["prior_mean_weight"]``
        (`lore_train.prior_scale.adjust`; ``scaled=False``: the fit itself). Kept until the seen users'
        weights change, so adapting users one by one does not refit it each time.

        ``seen_weights`` [N, K]: fit to these instead (not kept) -- under torchrun a
        process holds only its share of the users, the prior is everyone's."""
        key = self._prior_key()
        if seen_weights is not None:
            if seen_weights.ndim != 2 or seen_weights.shape[0] == 0 or seen_weights.shape[1] != self.K:
                raise ValueError(f"seen_weights must be [N >= 1, K={self.K}], "
                                 f"got {tuple(seen_weights.shape)}")
            alpha = prior_lib.fit_dirichlet(seen_weights.to(self.W.device)).to(self.W.device)
        elif self._prior_cache is None or self._prior_cache[0] != key:
            seen = torch.tensor(self.seen, dtype=torch.bool, device=self.W.device)
            if not bool(seen.any()):
                raise ValueError("the model has no seen users to fit a population prior to")
            alpha = prior_lib.fit_dirichlet(self.weights().detach()[seen]).to(self.W.device)
            self._prior_cache = (key, alpha)
        else:
            alpha = self._prior_cache[1]
        if not scaled:
            return alpha.clone()
        mean_weight = 1.0
        if self.train_config is None or self.train_config.fewshot_prior_scale == 0:
            mean_weight = float(self.meta.get("prior_mean_weight", 1.0))
        return adjust_prior(alpha, self.prior_scale, mean_weight)

    def _prior_key(self) -> tuple[int, int, int]:
        """Changes whenever W or the seen flags may have (a new W, an in-place edit, a user)."""
        return id(self.W), self.W._version, len(self.seen)

    @torch.no_grad()
    def fit_posterior(self, pairs: PreferencePairs, *, prior: str = "population",
                      alpha: torch.Tensor | None = None) -> PersonalRewardModel:
        """Laplace posteriors of ``pairs``' users at their current weights (say, the
        seen users from their training pairs); ``save()`` stores them. Returns ``self``.

        ``alpha``: the prior's concentration [K] to use instead of `population_prior`
        (under torchrun: the prior of every process's seen users)."""
        if alpha is None and prior == "population":
            alpha = self.population_prior()
        P = lore_kernels.project(pairs.features.to(self.V.device), self.V.detach())
        index = self.user_index(pairs.user_ids)
        H = posterior_lib.laplace_precision(P, pairs.user.to(self.V.device), self.W.detach()[index],
                                            self.likelihood, alpha)
        for u, h in zip(pairs.user_ids, H):
            self._posteriors[str(u)] = h
        return self

    def posterior_precisions(self) -> dict[str, torch.Tensor]:
        """The Laplace precision [K, K] of every user that has a posterior (a copy of the map)."""
        return dict(self._posteriors)

    def add_posteriors(self, precisions: Mapping[str, torch.Tensor]) -> PersonalRewardModel:
        """Keep precomputed Laplace precisions (user -> [K, K]), say gathered from the
        processes of a torchrun; every user must be one of the model's. Returns ``self``."""
        for user, H in precisions.items():
            if str(user) not in self._index:
                raise LookupError(f"posterior for unknown user {user!r}")
            if tuple(H.shape) != (self.K, self.K):
                raise ValueError(f"posterior precision of user {user!r} must be "
                                 f"[{self.K}, {self.K}], got {tuple(H.shape)}")
            self._posteriors[str(user)] = H.to(device=self.W.device, dtype=torch.float64)
        return self

    def posterior(self, user: str, *, samples: int = posterior_lib.DEFAULT_SAMPLES,
                  seed: int = 0) -> torch.Tensor:
        """Seeded draws [1, samples, K] of ``user``'s weights from their Laplace posterior."""
        samples = checks.positive_int("samples", samples)
        idx = self.user_index([user])
        return posterior_lib.logit_draws(self.W.detach()[idx], self._covariance(user)[None],
                                         samples, seed=seed)

    def _covariance(self, user: str) -> torch.Tensor:
        """The user's Laplace covariance [K, K] (fp64), kept until their posterior changes."""
        user = str(user)
        if user not in self._posteriors:
            raise ValueError(f"no posterior for user {user!r}: adapt() them, or call "
                             "fit_posterior(pairs) with their pairs")
        H = self._posteriors[user]
        cached = self._covariances.get(user)
        if cached is None or cached[0] is not H:
            cached = (H, posterior_lib.covariance(checks.precision_ok(H, user)[None])[0])
            self._covariances[user] = cached
        return cached[1]

    @torch.no_grad()
    def preference_probability(
        self, chosen: torch.Tensor, rejected: torch.Tensor, user: str, *,
        temperature: float | None = None, method: str = "delta",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """P(``user`` prefers chosen[i] to rejected[i]) [B] and its std under the posterior.

        The probability is sigmoid(tau / T * margin) (eps + (1 - 2 eps) times
        that with label noise eps); T defaults to the calibration temperature in
        ``meta`` (1 if none). ``method="delta"``: at the MAP weights, its std
        by the delta method through the softmax Jacobian; ``"draws"``: mean and
        std over seeded posterior draws.
        """
        T = (checks.positive_finite("meta temperature", self.meta.get("temperature", 1.0))
             if temperature is None else checks.positive_finite("temperature", temperature))
        Q = (self._embeddings(chosen) - self._embeddings(rejected)) @ self.V.detach()
        if method == "delta":
            idx = self.user_index([user])
            margin, std = posterior_lib.delta_std(Q, self.W.detach()[idx][0], self._covariance(user))
            tempered = self.likelihood.tempered(T)
            x = tempered.logit(margin)
            p = tempered.probability(margin)
            eps = tempered.label_noise
            slope = (1 - 2 * eps) * torch.sigmoid(x) * torch.sigmoid(-x) * tempered.tau  # dp/dmargin
            return p.to(torch.float32), (slope * std).to(torch.float32)
        if method != "draws":
            raise ValueError(f"method must be 'delta' or 'draws', got {method!r}")
        mean, std = posterior_lib.preference_moments(Q, self.posterior(user), torch.zeros(
            len(Q), dtype=torch.int64), self.likelihood.tempered(T))
        return mean.to(torch.float32), std.to(torch.float32)

    @torch.no_grad()
    def suggest_pairs(
        self, user: str, candidates: torch.Tensor | tuple[torch.Tensor, torch.Tensor], n: int
    ) -> torch.Tensor:
        """Indices [<= n] of the candidate comparisons that would teach most about ``user``.

        ``candidates``: a pair (emb_a [C, d], emb_b [C, d]) or their
        differences [C, d]. Greedy expected information gain under the user's
        posterior, each pick shrinking it (`lore_train.elicitation`), so the n
        are not redundant. A user the model does not know yet is a new user:
        the population prior is their posterior.
        """
        n = checks.positive_int("n", n, minimum=0)
        if isinstance(candidates, tuple):
            if len(candidates) != 2 or candidates[0].shape != candidates[1].shape:
                raise ValueError("candidates: give (emb_a [C, d], emb_b [C, d]) of one shape, or "
                                 "their differences [C, d]")
            Z = self._embeddings(candidates[0]) - self._embeddings(candidates[1])
        else:
            Z = self._embeddings(candidates)
        Q = Z @ self.V.detach()
        if str(user) in self._index:
            idx = self.user_index([user])
            if str(user) not in self._posteriors:
                self.posterior(user)  # raises the explanatory error
            W = self.W.detach()[idx]
            H = checks.precision_ok(self._posteriors[str(user)], str(user))[None]
        else:
            alpha = self.population_prior()
            W = prior_lib.prior_logits(alpha)[None]
            H = posterior_lib.laplace_precision(Q[:0], torch.zeros(0, dtype=torch.int64), W,
                                                self.likelihood, alpha)
        picks, _ = greedy_information_gain(Q[None], W, posterior_lib.covariance(H), self.likelihood,
                                           min(int(n), len(Q)))
        return picks[0][picks[0] >= 0].cpu()

    def _store_posterior(self, pairs: PreferencePairs, alpha: torch.Tensor | None) -> None:
        user = pairs.user_ids[0]
        P = lore_kernels.project(pairs.features.to(self.V.device), self.V.detach())
        W = self.W.detach()[self.user_index([user])]
        self._posteriors[user] = posterior_lib.laplace_precision(
            P, pairs.user.to(self.V.device), W, self.likelihood, alpha)[0]

    def _embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim == 1:
            embeddings = embeddings[None]
        if embeddings.ndim != 2 or embeddings.shape[-1] != self.dim:
            raise ValueError(f"embeddings have shape {tuple(embeddings.shape)}, the model wants "
                             f"[B, {self.dim}]")
        return checks.finite_rows("embeddings", embeddings.to(self.V.device, torch.float32))

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
            K=self.K,
            v_ref=self.v_ref,
            seen=self.seen + [False] * len(user_ids),
            meta=self.meta,
            train_config=self.train_config,
        )

    def adapt(
        self,
        user: str,
        data: PreferencePairs | torch.Tensor | None,
        *,
        steps: int | None = None,
        lr: float | None = None,
        seed: int = 0,
        replace: bool = False,
        prior: str | None = None,
        solver: str | None = None,
    ) -> PersonalRewardModel:
        """Fit ``user``'s K logits on the frozen basis and add them to this model, in place.

        ``data`` is the user's pairs: a `PreferencePairs` (their rows, or all
        rows when it holds a single user) or a raw [n, d] tensor of
        chosen-minus-rejected rows; None or no rows gives the population's
        mean user (the prior mean). ``prior`` ("none" or "population") and
        ``solver`` ("newton": the exact MAP, `lore_train.newton`; "adam":
        ``steps`` Adam steps at ``lr``) default to the few-shot settings the model
        was trained with ("none" and "newton" for a model built by hand), so an adapted user is fitted
        exactly like the unseen users of an evaluation. A user already in the
        model is refitted only with ``replace=True``. Returns ``self``;
        ``save()`` stores the new row and the user's posterior (for
        ``return_std`` and ``preference_probability``).
        """
        user = str(user)
        if user in self._index and not replace:
            kind = "trained jointly with V" if self.seen[self._index[user]] else "already adapted"
            raise ValueError(f"user {user!r} is {kind}; pass replace=True to refit their weights")
        if steps is not None:
            steps = checks.positive_int("steps", steps)
        if lr is not None:
            lr = checks.positive_finite("lr", lr)
        pairs = single_user_pairs(user, data, self.dim)
        if prior is not None and prior not in FEWSHOT_PRIORS:
            raise ValueError(f"prior must be one of {', '.join(map(repr, FEWSHOT_PRIORS))}, "
                             f"got {prior!r}")
        trained = self.train_config or TrainConfig(fewshot_prior="none")
        changes = {"steps": steps, "lr": lr, "prior": prior, "solver": solver}
        settings = trained.fewshot().with_(likelihood=self.likelihood, seed=seed,
                                           **{k: v for k, v in changes.items() if v is not None})
        alpha = self.population_prior() if settings.prior == "population" or pairs.num_pairs == 0 \
            else None
        prior_key = self._prior_cache[0] if self._prior_cache is not None else None
        H = None
        if settings.solver == "newton":
            P = lore_kernels.project(pairs.features.to(self.V.device), self.V.detach())
            result = newton_map(P, pairs.user.to(self.V.device), 1, settings.likelihood, prior=alpha)
            W, H = result.W.to(self.W), result.precision[0]
        else:
            W = fit_few_shot(self.V.detach(), pairs, settings, prior=alpha).to(self.W)
        kept_prior = prior_key == self._prior_key() and (
            user not in self._index or not self.seen[self._index[user]])
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
        if kept_prior:  # the seen users' weights did not change: the fitted prior still holds
            self._prior_cache = (self._prior_key(), self._prior_cache[1])
        if H is None:
            self._store_posterior(pairs, alpha)
        else:
            self._posteriors[user] = H
        return self

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
        description = {
            "user": str(user),
            "backbone": backbone or self.meta.get("embedder"),
            "dataset": self.meta.get("dataset"),
            "K": self.K,
            "kept_rank": self.kept_rank,
            "tau": self.tau,
            "label_noise": self.likelihood.label_noise,
        }
        return write_reward_head(self.user_head(user), directory, dtype=dtype, description=description)

    # -- storage ------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """A directory with ``model.safetensors`` (V, W, v_ref) and ``config.json``."""
        tensors = {"V": self.V, "W": self.W}
        if self.v_ref is not None:
            tensors["v_ref"] = self.v_ref
        posterior_users = [u for u in self.user_ids if u in self._posteriors]
        if posterior_users:  # Laplace precisions [P, K, K], in posterior_users' order
            tensors["posterior_precision"] = torch.stack(
                [self._posteriors[u].to(torch.float64) for u in posterior_users])
        config = {
            "K": self.K,
            "kept_rank": self.kept_rank,
            "dim": self.dim,
            "tau": self.tau,
            "user_ids": self.user_ids,
            "seen": self.seen,
            "posterior_users": posterior_users,
            "train_config": None if self.train_config is None else self.train_config.to_dict(),
            "meta": self.meta,
        }
        return write_checkpoint(directory, tensors, config)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> PersonalRewardModel:
        """A saved model; config.json and the tensors are checked against each other.

        A truncated tensor file, a config.json that is not JSON, or one whose
        K, dimension, user count or dtype disagrees with the tensors is a
        `DataError` naming the file, never a silently inconsistent model.
        """
        tensors, config = read_checkpoint(directory, device)
        check_checkpoint(Path(directory), tensors, config)
        train = config.get("train_config")
        try:
            model = cls(
                tensors["V"],
                tensors["W"],
                config["user_ids"],
                tau=config["tau"],
                K=config["K"],
                v_ref=tensors.get("v_ref"),
                seen=config.get("seen"),
                meta=config.get("meta"),
                train_config=None if train is None else TrainConfig.from_dict(
                    train, source=f"{Path(directory) / 'config.json'}: train_config"),
            )
        except ValueError as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"{Path(directory)}: {err}") from None
        precisions = tensors.get("posterior_precision")
        for user, h in zip(config.get("posterior_users") or [], [] if precisions is None else precisions):
            model._posteriors[user] = h.to(torch.float64)
        return model

    def extra_repr(self) -> str:
        return f"K={self.K}, kept_rank={self.kept_rank}, dim={self.dim}, users={self.num_users}"

