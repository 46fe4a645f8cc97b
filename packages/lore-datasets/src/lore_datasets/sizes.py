"""Sizes checked against the machine before anything is allocated or written.

A typo such as ``--users 1e12`` should be one line naming the flag, not a
NumPy MemoryError after minutes, a TiB allocation that takes the machine
down, or a disk filled to the last byte. `check_fits` compares what a
command would need with the memory and the free disk space there are;
`check_sizes` does so for a function of several sizing flags and names only
the flag(s) that drive the excess (`culprits`), not every flag there is.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import DataError


def human(nbytes: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.3g} EiB"  # pragma: no cover


def physical_memory() -> int | None:
    """The machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: str | Path) -> int | None:
    """Free bytes on the file system ``path`` (or its nearest existing ancestor) would be on."""
    probe = Path(path).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def excess(memory: float, disk: float, out: str | Path | None) -> tuple[int, float, str] | None:
    """What does not fit: (0 for memory or 1 for disk, the limit, the problem in words),
    or None when ``memory`` bytes fit in the machine and ``disk`` bytes under ``out``."""
    ram = physical_memory()
    if ram is not None and memory > ram:
        return 0, ram, f"would need {human(memory)} of memory, this machine has {human(ram)}"
    if out is not None and disk:
        free = free_disk(out)
        if free is not None and disk > free:
            return 1, free, f"would write {human(disk)}, {out} has {human(free)} free"
    return None


def check_fits(what: str, *, memory: float = 0, disk: float = 0,
               out: str | Path | None = None) -> None:
    """Refuse ``what`` (the flags or parameters at fault, as the user gave them) when it
    would need more than the machine's memory or than the free space under ``out``."""
    over = excess(memory, disk, out)
    if over is not None:
        raise DataError(f"{what}: {over[2]}")


Need = Callable[[Mapping[str, float]], float]


def culprits(given: Mapping[str, float], defaults: Mapping[str, float], need: Need,
             limit: float) -> list[str]:
    """The names in ``given`` whose values make ``need(given)`` exceed ``limit``.

    Where the ``defaults`` alone fit: every flag whose value alone (the
    others at their defaults) exceeds it; failing that (a product of several
    moderate values), the fewest flags, largest effect first, that exceed it
    together. Where the defaults alone do not fit (a nearly full disk): the
    flags whose values raise the need above the defaults' (maybe none).
    """
    def at(names: list[str]) -> float:
        return need({**defaults, **{n: given[n] for n in names}})

    base = at([])
    if base > limit:
        return [n for n in given if at([n]) > base]
    alone = [n for n in given if at([n]) > limit]
    if alone:
        return alone
    chosen: list[str] = []
    for name in sorted(given, key=lambda n: at([n]), reverse=True):
        chosen.append(name)
        if at(chosen) > limit:
            return [n for n in given if n in chosen]  # in the caller's order
    return list(given)  # not reached when need(given) > limit


def flag_text(name: str, value: float) -> str:
    """``--users 1000`` for a flag, ``num_users=1000`` for a parameter."""
    return f"{name} {value}" if name.startswith("-") else f"{name}={value}"


def check_sizes(given: Mapping[str, float], defaults: Mapping[str, float],
                needs: Callable[[Mapping[str, float]], tuple[float, float]], *,
                out: str | Path | None = None, note: str = "") -> None:
    """Refuse when ``needs(sizes)`` -> (bytes of memory, bytes on disk under ``out``)
    exceeds the machine at the ``given`` sizes, naming only the `culprits` (and ``note``,
    say the data set's share of the product). ``needs`` only computes: call this before
    allocating anything."""
    over = excess(*needs(given), out)
    if over is not None:
        which, limit, problem = over
        names = culprits(given, defaults, lambda v: needs(v)[which], limit)
        text = " ".join(flag_text(n, given[n]) for n in names) or "the default sizes"
        raise DataError(f"{text}{note}: {problem}")
