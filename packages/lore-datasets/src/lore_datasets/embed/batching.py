"""Batches by a token budget, with a back-off when the device runs out of memory.

Why a token budget: a fixed row count either leaves a large GPU idle on
short rows or runs out of memory on long ones; what a forward pass costs is
its padded token count (rows x longest row). Units (a row, or a prompt with
its responses) arrive sorted by length, so neighbours pad little; a batch is
closed when its padded cost would pass the budget.

Why the back-off: the budget that fits is hard to know in advance (other
processes, fragmentation, attention's quadratic term). On an out-of-memory
error the budget is halved and the same units are tried again in smaller
batches; the smaller budget is kept for the rest of the run. Only when a
single unit does not fit is the error raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..errors import DataError

Unit = TypeVar("Unit")


@dataclass
class EmbedStats:
    """What a run computed: real and padded tokens, time, and what was saved or cut."""

    rows: int = 0
    tokens: int = 0            # real tokens run through the model
    padded: int = 0            # padding tokens run through the model
    plain_tokens: int = 0      # tokens a one-row-at-a-time run would compute
    truncated_rows: int = 0    # rows cut to max_length (from the left)
    batches: int = 0
    oom_backoffs: int = 0
    seconds: float = 0.0

    @property
    def padding_fraction(self) -> float:
        total = self.tokens + self.padded
        return self.padded / total if total else 0.0

    @property
    def saved_fraction(self) -> float:
        """Share of the plain tokens not computed thanks to shared prompt prefixes."""
        return 1.0 - self.tokens / self.plain_tokens if self.plain_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens + self.padded) / self.seconds if self.seconds else 0.0

    def add(self, other: EmbedStats) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(padding_fraction=round(self.padding_fraction, 6),
                   saved_fraction=round(self.saved_fraction, 6),
                   tokens_per_second=round(self.tokens_per_second, 2))
        return out

    def postfix(self) -> str:
        """A short progress-bar suffix."""
        return (f"{self.tokens_per_second:,.0f} tok/s, pad {100 * self.padding_fraction:.1f}%"
                + (f", saved {100 * self.saved_fraction:.0f}%" if self.plain_tokens else ""))


def pack(units: Sequence[Unit], cost: Callable[[Sequence[Unit]], int], budget: int, *,
         real: Callable[[Sequence[Unit]], int] | None = None, max_padding: float = 1.0
         ) -> list[list[Unit]]:
    """Consecutive runs of ``units`` whose ``cost`` (padded tokens) stays within ``budget``.

    With ``real`` (the tokens without padding), a run is also closed before
    its padding would pass ``max_padding`` of its cost: on a large data set
    sorted by length, neighbours have the same length and the budget binds
    first; on a small or spread one, batches get smaller instead of padding
    more. A unit that alone exceeds the budget still gets a batch of its own
    (the caller decides whether that fits).
    """
    batches: list[list[Unit]] = []
    current: list[Unit] = []
    for unit in units:
        if current:
            grown = [*current, unit]
            padded = cost(grown)
            if padded > budget or (real is not None
                                   and padded - real(grown) > max_padding * padded):
                batches.append(current)
                current = []
        current.append(unit)
    if current:
        batches.append(current)
    return batches


def is_cuda_oom(err: BaseException) -> bool:
    """Whether ``err`` is the device running out of memory (CUDA's error type or message)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(err, oom)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


class BudgetRunner:
    """Run units in token-budget batches, halving the budget on out-of-memory errors."""

    def __init__(self, budget: int, *, min_budget: int = 1,
                 is_oom: Callable[[BaseException], bool] = is_cuda_oom,
                 on_oom: Callable[[], None] | None = None) -> None:
        if budget < 1:
            raise DataError(f"the token budget must be >= 1, got {budget}")
        self.budget = budget
        self.min_budget = min_budget
        self.is_oom = is_oom
        self.on_oom = on_oom
        self.backoffs = 0

    def run(self, units: Sequence[Unit], cost: Callable[[Sequence[Unit]], int],
            step: Callable[[list[Unit]], None], *,
            real: Callable[[Sequence[Unit]], int] | None = None, max_padding: float = 1.0) -> None:
        """Call ``step`` on every unit once, in order, in batches within the budget
        (and within ``max_padding``, see ``pack``)."""
        def split(items: Sequence[Unit]) -> list[list[Unit]]:
            return pack(items, cost, self.budget, real=real, max_padding=max_padding)

        pending = split(units)
        while pending:
            batch = pending.pop(0)
            try:
                step(batch)
            except Exception as err:  # only out-of-memory errors are handled
                if not self.is_oom(err):
                    raise
                if len(batch) == 1 or self.budget // 2 < self.min_budget:
                    raise DataError(
                        f"out of memory on a batch of {len(batch)} unit(s) costing "
                        f"{cost(batch)} tokens at a budget of {self.budget}; lower "
                        "--max-batch-tokens or --max-length") from None
                self.budget //= 2
                self.backoffs += 1
                if self.on_oom is not None:
                    self.on_oom()
                rest = [u for b in pending for u in b]
                pending = split([*batch, *rest])
                if len(pending[0]) >= len(batch):  # the budget still holds the batch whole
                    pending = [batch[: len(batch) // 2], batch[len(batch) // 2:], *split(rest)]


def timed(stats: EmbedStats, fn: Callable[[], Any]) -> Any:
    """``fn()``, its wall time added to ``stats.seconds``."""
    start = time.perf_counter()
    try:
        return fn()
    finally:
        stats.seconds += time.perf_counter() - start
