"""Output files and directories that are never half written.

Every file lore writes (results, CSVs, plots, checkpoints, reports) goes
through `atomic_write`: it is written to a temporary file next to its target
and moved over it with ``os.replace``, so a kill mid-write leaves the old file
or the new one, never a truncated mix. A command's output directory is
checked by `check_output_dir` before any data is loaded, and
`output_directory` decides where a run writes:

- a new or empty directory: written in place (a stopped run keeps what it
  finished, and ``resume`` continues it);
- a non-empty one: refused, unless ``resume`` (continue it in place) or
  ``overwrite``: the new run is built in a temporary sibling directory and
  swapped in as a whole when it succeeds; if it fails the old run is left
  exactly as it was.

`publish` is the one directory swap: an ``--overwrite`` run and the
staging directory of a torchrun run both end in it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DataError


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``.

    The parent directory is created. If ``write`` raises, the temporary file
    is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """Refuse an output place that cannot be a directory we can write, before any work.

    A regular file, a directory without write permission, or a missing
    directory whose nearest existing ancestor is not a writable directory is
    a `DataError` naming ``flag`` and the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{flag} {path}: exists and is not a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"{flag} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {path}: {probe} is not writable")
    return path


def is_empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def check_run_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False,
                  flag: str = "--out") -> Path:
    """`check_output_dir`, and refuse a non-empty directory unless ``overwrite`` or ``resume``."""
    path = check_output_dir(path, flag=flag)
    if overwrite and resume:
        raise DataError("--overwrite and --resume contradict each other: give one")
    if not (overwrite or resume or is_empty_dir(path)):
        raise DataError(f"{flag} {path}: not empty (an earlier run?); pass --overwrite to replace "
                        "it or --resume to continue it")
    # the swap needs to write the parent (a sibling directory and two renames)
    if overwrite and path.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {path}: --overwrite needs write access to {path.parent}")
    return path


@contextmanager
def output_directory(path: str | Path, *, overwrite: bool = False,
                     resume: bool = False) -> Iterator[Path]:
    """The directory a run should write into (see the module docstring for the rules).

    With ``overwrite`` and a non-empty ``path``, yields a fresh sibling
    directory; on normal exit it replaces ``path`` (the old run is moved
    aside, the new one renamed in, the old one deleted); on an exception the
    sibling is deleted and ``path`` is untouched.
    """
    path = check_run_dir(path, overwrite=overwrite, resume=resume)
    if not overwrite or is_empty_dir(path):
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, path)


def publish(staging: str | Path, path: str | Path) -> Path:
    """Put the directory ``staging`` in place of ``path`` as a whole.

    A new or empty ``path`` simply becomes it; a non-empty one is moved aside
    into a temporary sibling, replaced, and then deleted, so the old and new
    files are never mixed and a reader sees one run or the other.
    """
    staging, path = Path(staging), Path(path)
    if path.exists() and not is_empty_dir(path):
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
        return path
    if path.exists():
        path.rmdir()
    os.replace(staging, path)
    return path
