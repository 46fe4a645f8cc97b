"""Files and directories that survive a kill, a power loss and a second run.

Three tools every writer of lore shares:

- `new_file` / `new_dir`: a fresh, uniquely named temporary file or
  directory beside a target, created with the mode the umask gives
  (0644 / 0755 under umask 022; `tempfile.mkstemp` would give 0600 and
  `mkdtemp` 0700, which the rename would then publish).
- `fsync_file`, `fsync_dir` and `fsync_tree`: the data of a file, and the
  entries of its directory, are on the disk before a rename publishes them,
  so after a power loss a published name never points at an empty or short
  file.
- `swap_in` and `recover`: the one directory swap (``--overwrite``, a
  torchrun run's staging directory, ``lore-prepare convert`` onto an
  existing data set), and the step that finishes or rolls back a swap a
  kill interrupted. `lock` keeps a second run out of a directory in use.

The swap protocol (for ``DIR`` replaced by a complete staging directory
``.DIR.new-X`` in the same parent):

1. every file and directory of the staging directory is fsynced;
2. a journal ``.DIR.swap.json`` is written (atomically, fsynced) naming the
   staging directory, the name the old run will be moved aside to
   (``.DIR.old-X``) and the staging directory's inode number;
3. where the system can (Linux ``renameat2(RENAME_EXCHANGE)``), ``DIR`` and
   the staging directory are exchanged in one atomic step, so ``DIR`` is
   never missing; otherwise ``DIR`` is renamed to ``.DIR.old-X`` and the
   staging directory to ``DIR`` (two renames);
4. the parent is fsynced, the old run deleted, then the journal.

`recover` (run at the start of every command that writes ``DIR``, under
the lock) reads a journal left by a kill: if ``DIR`` is the new run (its
inode), the swap finished and only the old run is deleted; if ``DIR`` is
still the old run, the staging directory is deleted (rolled back); if
``DIR`` is missing (killed between the two renames), the complete new run
is renamed into place (rolled forward). Staging directories of runs killed
before step 2 are deleted.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DataError

# test-only: a function called with the name of each step of `swap_in`
# (tests replace it in a child process to kill it there); does nothing otherwise
_hook: Callable[[str], None] = lambda step: None  # noqa: E731
STAGING_TAGS = ("new", "old", "partial")  # .DIR.<tag>-XXXX siblings that `recover` may delete


def _token() -> str:
    return secrets.token_hex(4)


def new_file(target: str | Path) -> Path:
    """An empty new file beside ``target`` (``.NAME.XXXX.tmp``), mode 0666 & ~umask."""
    target = Path(target)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{_token()}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")


def new_dir(target: str | Path, tag: str = "new") -> Path:
    """An empty new directory beside ``target`` (``.NAME.TAG-XXXX``), mode 0777 & ~umask."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = target.parent / f".{target.name}.{tag}-{_token()}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """`fsync_file` every file and `fsync_dir` every directory under ``root``."""
    for here, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(here)


def replace_file(tmp: str | Path, target: str | Path) -> None:
    """Publish a written temporary file: fsync it, rename it onto ``target``, fsync the directory."""
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(Path(target).parent)


# -- the directory swap ------------------------------------------------------
def _absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalized, so ``.`` or ``run/..`` has a real name."""
    return Path(os.path.abspath(path))


def journal_path(path: Path) -> Path:
    path = _absolute(path)
    return path.parent / f".{path.name}.swap.json"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(staging: str | Path, path: str | Path) -> Path:
    """Put the complete directory ``staging`` (a sibling of ``path``) in place of ``path``.

    A new or empty ``path`` simply becomes it; a non-empty one is replaced
    by the crash-safe protocol of the module docstring. Either way the files
    are on the disk before they are published.
    """
    staging, path = _absolute(staging), _absolute(path)
    parent = path.parent
    if staging.parent != parent:
        raise ValueError(f"{staging}: the staging directory must be a sibling of {path}")
    fsync_tree(staging)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
        fsync_dir(parent)
        return path
    aside = parent / f".{path.name}.old-{_token()}"
    journal = journal_path(path)
    record = {"new": staging.name, "aside": aside.name, "new_inode": staging.stat().st_ino}
    tmp = new_file(journal)
    tmp.write_text(json.dumps(record), encoding="utf-8")
    replace_file(tmp, journal)
    _hook("journal")
    if _exchange(staging, path):
        fsync_dir(parent)
        _hook("exchanged")
        shutil.rmtree(staging, ignore_errors=True)  # now the old run
    else:
        os.replace(path, aside)
        _hook("aside")
        os.replace(staging, path)
        fsync_dir(parent)
        _hook("swapped")
        shutil.rmtree(aside, ignore_errors=True)
    journal.unlink(missing_ok=True)
    fsync_dir(parent)
    return path


def recover(path: str | Path) -> str | None:
    """Finish or roll back a swap into ``path`` that a kill interrupted; delete stale staging.

    Call it holding `lock` on ``path``. Returns what was done ("finished",
    "rolled back", "rolled forward") or None when there was nothing to do.
    """
    path = _absolute(path)
    parent, journal = path.parent, journal_path(path)
    done = None
    if journal.is_file():
        try:
            record = json.loads(journal.read_text(encoding="utf-8"))
            new, aside = parent / record["new"], parent / record["aside"]
            inode = int(record["new_inode"])
            prefix = f".{path.name}."
            if (new.parent != parent or aside.parent != parent
                    or not (new.name.startswith(prefix) and aside.name.startswith(prefix))):
                raise ValueError(f"names that are not {prefix}* siblings")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise DataError(f"{journal}: an interrupted swap's journal that cannot be read "
                            f"({err}); compare {path} with its .{path.name}.* siblings and "
                            "delete the journal") from None
        if path.exists():  # the new run (inode) after the swap, or still the old one
            done = "finished" if path.stat().st_ino == inode else "rolled back"
        elif new.is_dir():  # killed between the two renames: the new run is complete
            os.replace(new, path)
            done = "rolled forward"
        elif aside.is_dir():
            os.replace(aside, path)
            done = "rolled back"
        fsync_dir(parent)
        for leftover in (new, aside):  # the old run, or a staging directory not swapped in
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
        journal.unlink()
        fsync_dir(parent)
    for tag in STAGING_TAGS:
        for stale in parent.glob(f".{path.name}.{tag}-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
    return done


# -- the lock ----------------------------------------------------------------
_held: dict[str, int] = {}  # lock files this process holds -> nesting depth


def lock_path(path: Path) -> Path:
    path = _absolute(path)
    return path.parent / f".{path.name}.lock"


@contextmanager
def lock(path: str | Path, *, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` for a block (``.NAME.lock`` beside it).

    Another process holding it is a `DataError` naming ``flag``; the same
    process may take it again (nested). The lock file is removed on release
    (after the lock is checked to be on the file the name still points at,
    so two runs never hold two different files), and so are parent
    directories made for it that stayed empty: a refused run leaves nothing.
    """
    path = Path(path)
    file = lock_path(path)
    key = str(file.absolute())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    made = [p for p in (file.parent, *file.parent.parents) if not p.exists()]
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(file, path, flag)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        file.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        for parent in made:
            try:
                parent.rmdir()
            except OSError:
                break


def _acquire(file: Path, path: Path, flag: str) -> int:
    """An fd holding flock on ``file``, which the name still points at."""
    for _ in range(100):
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataError(f"{flag} {path}: another lore run is writing it (it holds {file}); "
                            "wait for it or choose another directory") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(file))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed it as we opened it: take the new one
    raise DataError(f"{flag} {path}: could not lock {file}")
