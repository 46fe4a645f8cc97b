"""The torch.distributed calls lore makes, each bounded in time.

A collective waits for every process. If one died, raised, or is stuck, the
others must not wait forever: every call here runs under a watchdog, and a
failed or overdue call becomes one `PeerFailure` line instead of a hang or a
backend traceback. Two limits apply (docs/scale.md, "Failures"):

- the process group's own timeout (``init_process_group(timeout=...)``):
  gloo raises when a peer does not answer within it, and a dead peer's
  closed socket fails the call at once;
- the watchdog: a daemon thread that ends the process (exit status 3, one
  line on stderr) when a call here has not returned ``grace`` seconds after
  that timeout, for backends or states where the call itself never returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

WATCHDOG_EXIT = 3


class PeerFailure(RuntimeError):
    """Another process failed, left, or did not answer in time."""


class Watchdog:
    """Ends this process when one guarded call outlives ``timeout`` seconds."""

    def __init__(self, timeout: float, prog: str = "lore") -> None:
        self.timeout = timeout
        self.prog = prog
        self._what: str | None = None
        self._since = 0.0
        self._lock = threading.Lock()
        thread = threading.Thread(target=self._watch, name="lore-watchdog", daemon=True)
        thread.start()

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        with self._lock:
            self._what, self._since = what, time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._what = None

    def _watch(self) -> None:
        tick = min(1.0, self.timeout / 10)
        while True:
            time.sleep(tick)
            with self._lock:
                what, since = self._what, self._since
            if what is not None and time.monotonic() - since > self.timeout:
                rank = os.environ.get("RANK", "?")
                print(f"{self.prog}: error: rank {rank}: no answer from the other processes for "
                      f"{self.timeout:g} s at {what}; giving up", file=sys.stderr, flush=True)
                os._exit(WATCHDOG_EXIT)


_watchdog: Watchdog | None = None


def start_watchdog(timeout: float, prog: str = "lore") -> Watchdog:
    """Guard every later call of this module (one watchdog per process)."""
    global _watchdog
    if _watchdog is None or _watchdog.timeout != timeout:
        _watchdog = Watchdog(timeout, prog)
    return _watchdog


@contextmanager
def collective(what: str) -> Iterator[None]:
    """Run a collective under the watchdog; a backend error becomes a `PeerFailure` line."""
    guard = _watchdog.guard(what) if _watchdog is not None else _nothing()
    with guard:
        try:
            yield
        except PeerFailure:
            raise
        except RuntimeError as err:  # DistBackendError and gloo/nccl errors are RuntimeErrors
            reason = " ".join(str(err).split())[:200]
            raise PeerFailure(f"rank {dist.get_rank()}: another process failed or left during "
                              f"{what} ({reason})") from None


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def all_reduce(t: torch.Tensor, what: str, op: Any = None) -> None:
    with collective(what):
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)


def all_gather_object(obj: Any, what: str) -> list[Any]:
    every: list[Any] = [None] * dist.get_world_size()
    with collective(what):
        dist.all_gather_object(every, obj)
    return every


def gather_object(obj: Any, what: str) -> list[Any] | None:
    """Every process's ``obj`` on process 0 (in rank order); None elsewhere."""
    every: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    with collective(what):
        dist.gather_object(obj, every, dst=0)
    return every


def check_agree(key: Any, what: str) -> None:
    """Fail on every process, naming the odd ones out, unless all give an equal ``key``."""
    every = all_gather_object(repr(key), f"the check of {what}")
    differ = [r for r, k in enumerate(every) if k != every[0]]
    if differ:
        raise ValueError(f"process ranks {differ} were given other {what} than rank 0")
