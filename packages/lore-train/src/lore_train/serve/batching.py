"""Dynamic batching: conversations from concurrent requests share one backbone forward.

Why: a transformer forward on 16 short conversations costs far less than 16
forwards on one, so the server queues every request's conversations and a
single task cuts the queue into batches (up to ``max_batch_tokens`` tokens,
waiting at most ``max_wait_ms`` for more to arrive) while the previous batch
runs. The forward itself runs on one worker thread, off the event loop, so
the server keeps accepting and answering requests while the backbone works.
The per-user K-vector is applied afterwards by the caller: the backbone part
does not depend on the user, so requests of different users batch together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

Forward = Callable[[list[Any], list[str]], torch.Tensor]  # (prompts, completions) -> [B, K]
OnBatch = Callable[[int, int, float], None]  # (conversations, tokens, forward seconds)


@dataclass
class _Item:
    prompt: Any
    completion: str
    tokens: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Queue conversations, run them through ``forward`` in batches, hand each its row.

    ``forward`` must be safe to call from a worker thread (it is only ever
    called from one). ``count_tokens`` estimates the tokens of each
    conversation for the batch limit; a single conversation over the limit
    runs alone.
    """

    def __init__(self, forward: Forward, count_tokens: Callable[[Sequence[Any], Sequence[str]],
                                                                 list[int]],
                 *, max_batch_tokens: int, max_wait_ms: float,
                 on_batch: OnBatch | None = None) -> None:
        self._forward = forward
        self._count_tokens = count_tokens
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._on_batch = on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lore-forward")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lore-batcher")

    async def stop(self) -> None:
        """Stop batching; conversations still queued fail with a RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def basis(self, prompts: Sequence[Any], completions: Sequence[str]) -> torch.Tensor:
        """[n, K] backbone rewards of the n conversations, batched with everyone else's."""
        if self._task is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        tokens = self._count_tokens(prompts, completions)
        items = [_Item(p, c, t, loop.create_future())
                 for p, c, t in zip(prompts, completions, tokens, strict=True)]
        self._pending.extend(items)
        self._arrived.set()
        try:
            rows = await asyncio.gather(*(it.future for it in items))
        except BaseException:
            for it in items:  # a client gone: its rows are not computed if not started yet
                it.future.cancel()
            raise
        return torch.stack(rows) if rows else torch.zeros(0, 0)

    async def _next_batch(self) -> list[_Item]:
        """Wait for conversations, then take up to the token limit, waiting up to max_wait."""
        loop = asyncio.get_running_loop()
        batch: list[_Item] = []
        tokens = 0
        deadline = None
        while True:
            while self._pending and (not batch or
                                     tokens + self._pending[0].tokens <= self.max_batch_tokens):
                item = self._pending.popleft()
                if item.future.done():  # cancelled: its client has gone
                    continue
                batch.append(item)
                tokens += item.tokens
            if self._pending and batch:  # the next one would overflow the batch
                return batch
            if batch and deadline is None:
                deadline = loop.time() + self.max_wait
            remaining = None if not batch else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:  # the name of TimeoutError before Python 3.11
                return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            prompts = [it.prompt for it in batch]
            completions = [it.completion for it in batch]
            start = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self._executor, self._forward, prompts,
                                                  completions)
            except Exception as err:  # the batch fails, the server goes on
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(err)
                continue
            seconds = time.perf_counter() - start
            if self._on_batch is not None:
                self._on_batch(len(batch), sum(it.tokens for it in batch), seconds)
            for it, row in zip(batch, rows):
                if not it.future.done():
                    it.future.set_result(row)
