"""Processes under torchrun, and the torch.distributed calls lore makes, each bounded in time.

`join` puts this process in the default process group from torchrun's
environment (``lore-train`` and ``lore-prepare embed`` call it when
``WORLD_SIZE`` > 1). It lives in lore-datasets, the lowest package with a
command, so both commands share it.

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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = 300.0  # seconds a process waits for the others at one collective
WATCHDOG_GRACE = 30.0  # the watchdog ends a process this long after the group's timeout
WATCHDOG_EXIT = 3  # exit status when the watchdog ends a process
TERMINATED = 143  # exit status after SIGTERM (torchrun stopping the survivors of a failure)


def world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={value!r} is not an integer") from None


def local_device(device: str) -> str:
    """A bare "cuda" is this process's GPU (``LOCAL_RANK``), not every process on GPU 0."""
    if device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


@dataclass(frozen=True)
class Process:
    """This process in the group: its rank, the group size, backend and device."""

    rank: int
    world_size: int
    backend: str
    device: str


def join(device: str, timeout: float = DEFAULT_TIMEOUT, prog: str = "lore", *,
         backend: str | None = None) -> Process:
    """Join the default process group from torchrun's environment.

    The backend is ``nccl`` when ``device`` is CUDA, else ``gloo`` (or
    ``backend``). ``device`` becomes this process's device (`local_device`,
    made current). Starts the watchdog (``timeout`` + `WATCHDOG_GRACE`) and
    turns SIGTERM into one line and exit status 143.
    """
    if timeout <= 0:
        raise ValueError(f"--dist-timeout must be > 0 seconds, got {timeout:g}")
    device = local_device(device)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    backend = backend or ("nccl" if torch.device(device).type == "cuda" else "gloo")
    signal.signal(signal.SIGTERM, lambda signum, frame: _terminated(prog))
    start_watchdog(timeout + WATCHDOG_GRACE, prog)
    with collective("joining the process group"):
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return Process(dist.get_rank(), dist.get_world_size(), backend, device)


def joined() -> bool:
    """Whether this process is in an initialized default process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank()


def size() -> int:
    return dist.get_world_size()


def leave() -> None:
    """Leave the default process group (if joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End one process of a torchrun launch with ``code``, once its work is done.

    Leaves the group, flushes the standard streams and exits without the
    interpreter's teardown: on a loaded machine gloo's threads can abort
    there ("terminate called without an active exception", SIGABRT) after
    all the work is done, and torchrun then stops the processes still
    finishing theirs, failing a run that succeeded.
    """
    leave()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_cleanups: list[Callable[[], None]] = []


def on_terminate(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run ``cleanup`` if SIGTERM ends this process; call the returned function to cancel."""
    _cleanups.append(cleanup)
    return lambda: _cleanups.remove(cleanup) if cleanup in _cleanups else None


def _terminated(prog: str) -> None:
    rank = os.environ.get("RANK", "?")
    print(f"{prog}: error: rank {rank}: stopped by the launcher (SIGTERM; another process "
          "probably failed, see its message)", file=sys.stderr, flush=True)
    for cleanup in list(_cleanups):
        cleanup()
    os._exit(TERMINATED)


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


def barrier(what: str) -> None:
    with collective(what):
        dist.barrier()


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
