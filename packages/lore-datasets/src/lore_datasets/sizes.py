"""Sizes checked against the machine before anything is allocated or written.

A typo such as ``--users 1e12`` should be one line naming the flag, not a
NumPy MemoryError after minutes, a TiB allocation that takes the machine
down, or a disk filled to the last byte. `check_fits` compares what a
command would need with the memory and the free disk space there are.
"""

from __future__ import annotations

import os
import shutil
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


def check_fits(what: str, *, memory: float = 0, disk: float = 0,
               out: str | Path | None = None) -> None:
    """Refuse ``what`` (the flags or parameters at fault, as the user gave them) when it
    would need more than the machine's memory or than the free space under ``out``."""
    ram = physical_memory()
    if ram is not None and memory > ram:
        raise DataError(f"{what}: would need {human(memory)} of memory, this machine has "
                        f"{human(ram)}")
    if out is not None and disk:
        free = free_disk(out)
        if free is not None and disk > free:
            raise DataError(f"{what}: would write {human(disk)}, {out} has {human(free)} free")
