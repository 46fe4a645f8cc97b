"""The batcher on its own: batches obey the token limit, every caller gets its own rows,
and a slow forward never blocks the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

pytest.importorskip("starlette")

from lore_train.serve.batching import Batcher


def _forward(log: list[list[str]], seconds: float = 0.0):
    """A backbone stand-in whose row for a completion is (its length, its first byte)."""
    def forward(prompts, completions):
        log.append(list(completions))
        time.sleep(seconds)
        return torch.tensor([[len(c), ord(c[0])] for c in completions], dtype=torch.float32)
    return forward


def _tokens(prompts, completions):
    return [len(c) for c in completions]


def test_concurrent_requests_share_forwards_within_the_token_limit():
    log: list[list[str]] = []

    async def main():
        batcher = Batcher(_forward(log, 0.02), _tokens, max_batch_tokens=40, max_wait_ms=20)
        batcher.start()
        texts = [[f"{chr(97 + i)}{'x' * (i % 5)}" for _ in range(3)] for i in range(16)]
        outs = await asyncio.gather(*(batcher.basis(["p"] * 3, t) for t in texts))
        await batcher.stop()
        return texts, outs

    texts, outs = asyncio.run(main())
    for t, out in zip(texts, outs):  # each caller got the rows of its own completions
        assert out.tolist() == [[len(c), ord(c[0])] for c in t]
    assert sum(len(b) for b in log) == 48
    assert len(log) < 16  # batched across requests
    for batch in log:  # the token limit holds (no single item is over it)
        assert sum(len(c) for c in batch) <= 40


def test_a_conversation_over_the_limit_runs_alone():
    log: list[list[str]] = []

    async def main():
        batcher = Batcher(_forward(log), _tokens, max_batch_tokens=4, max_wait_ms=5)
        batcher.start()
        out = await batcher.basis(["p", "p"], ["a" * 10, "b"])
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert out[:, 0].tolist() == [10, 1]
    assert log == [["a" * 10], ["b"]]


def test_the_forward_runs_off_the_event_loop():
    """While a 0.4 s forward runs, the loop keeps ticking (other requests are served)."""
    log: list[list[str]] = []
    forward_threads = []

    def forward(prompts, completions):
        forward_threads.append(threading.current_thread())
        return _forward(log, 0.4)(prompts, completions)

    async def main():
        batcher = Batcher(forward, _tokens, max_batch_tokens=100, max_wait_ms=0)
        batcher.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await batcher.basis(["p"], ["abc"])
        task.cancel()
        await batcher.stop()
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= 10
    assert forward_threads[0] is not threading.main_thread()


def test_a_failing_forward_fails_its_batch_only():
    calls = []

    def forward(prompts, completions):
        calls.append(completions)
        if "boom" in completions:
            raise RuntimeError("backbone failed")
        return torch.ones(len(completions), 2)

    async def main():
        batcher = Batcher(forward, _tokens, max_batch_tokens=100, max_wait_ms=0)
        batcher.start()
        with pytest.raises(RuntimeError, match="backbone failed"):
            await batcher.basis(["p"], ["boom"])
        out = await batcher.basis(["p"], ["fine"])
        await batcher.stop()
        return out

    assert asyncio.run(main()).tolist() == [[1.0, 1.0]]
