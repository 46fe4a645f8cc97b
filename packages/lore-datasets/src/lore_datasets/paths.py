"""Names read from a data or state file stay inside that file's directory.

An index, a results file or a manifest names other files (a shard, a
checkpoint). Such a name is data, not a path the user chose: it may not be
absolute, climb out with ``..``, or lead out through a symbolic link, or a
crafted file could make lore read (and train on) anything on the machine.
Every reader resolves such names with `contained`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import DataError


def contained(directory: str | Path, name: object, where: str) -> Path:
    """``directory / name``, checked to resolve inside ``directory``.

    ``where`` says where the name was read (the file and the field), for the
    `DataError` raised when ``name`` is not a non-empty relative string, has
    a ``..`` part, or resolves (following symbolic links) outside
    ``directory``.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise DataError(f"{where}: {name!r} is not a file name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or Path(name).is_absolute() or name.startswith("\\"):
        raise DataError(f"{where}: {name!r} is an absolute path; names in lore files are "
                        "relative to their directory")
    if ".." in pure.parts or ".." in Path(name).parts:
        raise DataError(f"{where}: {name!r} leads out of its directory ('..')")
    directory = Path(directory)
    path = directory / name
    root = os.path.realpath(directory)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise DataError(f"{where}: {name!r} leads out of {directory} (a symbolic link)")
    return path
