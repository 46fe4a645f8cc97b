"""What each endpoint does, without HTTP: score, adapt, suggest, read and delete users.

Why apart from the routes: this is where the order of effects is kept, and it
is the order that makes the promises hold. A comparison is answered only after
the user is refitted *and* the answers are committed to the store; a failed
commit puts the previous weights back. All reward math is `PersonalReward`'s:
this module batches conversations through its backbone (`Batcher`) and hands
the [n, K] basis rewards to ``rewards_from_basis`` / ``add_user`` /
``suggest_pairs_from_basis``. A user's read-refit-commit runs under that
user's lock; the backbone runs on the
batcher's worker thread, the store on its own, and every call that reads or
changes users (``add_user``, ``rewards_from_basis``, ...) on a third, one call
at a time: a refit never blocks the event loop, and no two threads ever touch
the model's users at once.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from .batching import Batcher, OnBatch
from .limits import ServeLimits
from .schema import Comparison, Prompt, RequestError
from .store import UserStore

T = TypeVar("T")
LOCK_STRIPES = 64


def prompt_text(prompt: Prompt) -> str:
    """The text of a prompt (messages joined) for counting its tokens."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


class RewardService:
    """One personalized reward model behind a batcher and a durable user store."""

    def __init__(self, reward: Any, store: UserStore, limits: ServeLimits,
                 on_batch: OnBatch | None = None) -> None:
        self.reward = reward
        self.store = store
        self.limits = limits
        self.model_users = set(reward.user_ids)  # shipped with the export, not adapted here
        self._counter = copy.deepcopy(reward.tokenizer)  # its own copy: fast tokenizers are
        self._on_batch = on_batch                        # not safe across threads
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lore-store")
        self._users_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lore-users")
        self._n_users = len(reward.user_ids)
        self.batcher: Batcher | None = None
        self.restore()

    # -- life cycle ---------------------------------------------------------------
    def restore(self) -> None:
        """Bring the store's users into the model: deleted model users out, adapted users
        refitted from their stored basis diffs (no backbone needed)."""
        for user in self.store.deleted_model_users():
            if user in self.reward.user_ids:
                self.reward.remove_user(user)
            self.model_users.discard(user)
        for user in self.store.user_ids():
            self.reward.add_user(user, basis_diffs=self.store.basis_diffs(user), replace=True)
            self.model_users.discard(user)
        self._n_users = len(self.reward.user_ids)

    def start(self) -> None:
        """Start batching (on the running event loop)."""
        self.batcher = Batcher(self.reward.basis_rewards, self.count_tokens,
                               max_batch_tokens=self.limits.max_batch_tokens,
                               max_wait_ms=self.limits.max_wait_ms, on_batch=self._on_batch)
        self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        await self._in_store(self.store.close)
        self._store_thread.shutdown(wait=True)
        self._users_thread.shutdown(wait=True)

    def count_tokens(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[int]:
        texts = [prompt_text(p) + "\n" + c for p, c in zip(prompts, completions)]
        return [len(ids) for ids in self._counter(texts, add_special_tokens=True)["input_ids"]]

    async def _in_store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_thread,
                                          functools.partial(fn, *args, **kwargs))

    async def _in_users(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._users_thread,
                                          functools.partial(fn, *args, **kwargs))

    def _counted(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` (a call that adds or removes users), then the user count (users thread)."""
        try:
            return fn(*args, **kwargs)
        finally:
            self._n_users = len(self.reward.user_ids)

    def _lock(self, user: str) -> asyncio.Lock:
        digest = hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=4).digest()
        return self._locks[int.from_bytes(digest, "little") % LOCK_STRIPES]

    async def basis(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> torch.Tensor:
        assert self.batcher is not None, "start() the service first"
        return await self.batcher.basis(list(prompts), list(completions))

    # -- endpoints --------------------------------------------------------------------
    async def score(self, users: Sequence[str], prompts: Sequence[Prompt],
                    responses: Sequence[str], return_std: bool = False
                    ) -> tuple[list[float], list[float] | None]:
        """Each response's reward for its user (and the posterior std)."""
        basis = await self.basis(prompts, responses)
        out = await self._in_users(self.reward.rewards_from_basis, basis, list(users),
                                   return_std=return_std)
        if return_std:
            rewards, std = out
            return rewards.tolist(), std.tolist()
        return out.tolist(), None

    async def add_comparisons(self, user: str, comparisons: list[Comparison]) -> dict[str, Any]:
        """Refit ``user`` on all their answers so far plus these; commit; then return."""
        if user in self.model_users:
            raise RequestError(409, f"user {user!r} comes with the model; its weights are "
                                    "not adapted online (delete it first, or use another id)")
        n = len(comparisons)
        prompts = [c.prompt for c in comparisons]
        basis = await self.basis(prompts + prompts,
                                 [c.chosen for c in comparisons] + [c.rejected for c in comparisons])
        diffs = basis[:n] - basis[n:]
        async with self._lock(user):
            previous = await self._in_store(self.store.basis_diffs, user)
            weights = await self._in_users(self._counted, self.reward.add_user, user,
                                           basis_diffs=torch.cat([previous, diffs]), replace=True)
            try:
                total = await self._in_store(self.store.add, user,
                                             [c.as_json() for c in comparisons], diffs, weights)
            except BaseException:
                await self._in_users(self._counted, self._put_back, user, previous)
                raise
        return {"user": user, "weights": weights.tolist(), "added": n,
                "n_comparisons": total}

    def _put_back(self, user: str, previous: torch.Tensor) -> None:
        """The weights as they were before an answer that could not be stored (users thread)."""
        if len(previous):
            self.reward.add_user(user, basis_diffs=previous, replace=True)
        elif user in self.reward.user_ids:
            self.reward.remove_user(user)

    async def suggest(self, user: str, prompt: Prompt, candidates: list[str], n: int
                      ) -> list[list[int]]:
        """The n pairs of candidates whose answers would teach most about ``user``."""
        basis = await self.basis([prompt] * len(candidates), candidates)
        pairs = await self._in_users(self.reward.suggest_pairs_from_basis, user, basis, n)
        return [[int(i), int(j)] for i, j in pairs]

    async def user(self, user: str, *, with_comparisons: bool = True) -> dict[str, Any]:
        """What the server holds about ``user`` (404 when nothing)."""
        async with self._lock(user):
            weights = await self._in_users(self._known_weights, user)
            if weights is None:
                raise RequestError(404, f"user {user!r} is unknown")
            info: dict[str, Any] = {
                "user": user,
                "source": "model" if user in self.model_users else "adapted",
                "weights": weights.tolist(),
            }
            if with_comparisons:
                info["comparisons"] = await self._in_store(self.store.comparisons, user)
                info["n_comparisons"] = len(info["comparisons"])
        return info

    async def delete(self, user: str) -> dict[str, Any]:
        """Forget ``user``: answers, weights, and (for a user of the model) their model row."""
        async with self._lock(user):
            if await self._in_users(self._known_weights, user) is None:
                raise RequestError(404, f"user {user!r} is unknown")
            n = await self._in_store(self.store.delete, user,
                                     from_model=user in self.model_users)
            await self._in_users(self._counted, self.reward.remove_user, user)
            self.model_users.discard(user)
        return {"user": user, "deleted": True, "comparisons_deleted": n}

    def _known_weights(self, user: str) -> torch.Tensor | None:
        """The user's weights, None for a user the model does not know (users thread)."""
        return self.reward.user_weights(user) if user in self.reward.user_ids else None

    def n_users(self) -> int:
        """Users with weights (the model's and adapted), as of the last change."""
        return self._n_users
