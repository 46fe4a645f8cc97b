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

A run holds an exclusive lock on its directory from start to end
(`claim_output`), after finishing or rolling back a swap an earlier run was
killed in. `publish` is the one directory swap: an ``--overwrite`` run, the
staging directory of a torchrun run and a replaced data set all end in it;
the swap's crash-safe protocol, its recovery and the fsyncs are
`lore_datasets.runtime.durable`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from ..errors import DataError
from . import durable


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``.

    The parent directory is created. If ``write`` raises, the temporary file
    is removed and ``path`` is untouched. The file gets the umask's mode, and
    its data and the rename are fsynced (`durable.replace_file`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = durable.new_file(path)
    try:
        try:
            write(tmp)
        except SafetensorError as err:  # a full disk, say: an OSError naming the target
            raise _as_os_error(err, path) from None
        durable.replace_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _as_os_error(err: Exception, path: Path) -> OSError:
    """safetensors reports an I/O failure as text ("... (os error 28)"): the OSError it was."""
    found = re.search(r"os error (\d+)", str(err))
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), str(path))
    return OSError(errno.EIO, f"cannot write it ({err})", str(path))


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
def claim_output(path: str | Path, *, overwrite: bool = False, resume: bool = False,
                 flag: str = "--out") -> Iterator[Path]:
    """Hold ``path`` for a whole run: lock it (a second run is refused), finish or roll
    back a swap a killed run left (`durable.recover`), then `check_run_dir`."""
    path = check_output_dir(path, flag=flag)
    with durable.lock(path, flag=flag):
        durable.recover(path)
        yield check_run_dir(path, overwrite=overwrite, resume=resume, flag=flag)


@contextmanager
def output_directory(path: str | Path, *, overwrite: bool = False,
                     resume: bool = False) -> Iterator[Path]:
    """The directory a run should write into (see the module docstring for the rules).

    With ``overwrite`` and a non-empty ``path``, yields a fresh sibling
    directory; on normal exit it replaces ``path`` (`durable.swap_in`); on an
    exception the sibling is deleted and ``path`` is untouched. The directory
    is locked throughout (`claim_output`).
    """
    with claim_output(path, overwrite=overwrite, resume=resume) as path:
        if not overwrite or is_empty_dir(path):
            path.mkdir(parents=True, exist_ok=True)
            yield path
            return
        staging = durable.new_dir(path, "new")
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish(staging, path)


def publish(staging: str | Path, path: str | Path) -> Path:
    """Put the complete directory ``staging`` (a sibling) in place of ``path`` as a whole:
    the old and new files are never mixed, a reader sees one run or the other, and a
    kill at any point leaves ``path`` whole or recoverable (`durable.swap_in`)."""
    return durable.swap_in(staging, path)
