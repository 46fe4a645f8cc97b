"""Load the reference pipelines' pickles without running code from the file.

The TL;DR embeddings are ``pickle.dump`` of dicts of torch tensors and the
PRISM rows are ``torch.save`` of lists of dicts. Plain ``pickle.load`` (and
``torch.load(weights_only=False)``) would execute whatever a file asks for,
so these files are read by an unpickler whose ``find_class`` admits only:
plain containers, torch tensors rebuilt from raw storage bytes, and numpy
arrays/scalars. Every admitted global maps to a function of this module (or
to a numpy constructor that cannot run code); anything else stops the load
before it is called, with an error naming the global.

Three container formats are read, all without ``torch.load``:
- a plain pickle (``pickle.dump``); each tensor inside carries its storage as
  a nested legacy torch stream (``torch.storage._load_from_bytes``);
- the legacy ``torch.save`` stream (magic number, sys info, object pickle,
  storage keys, raw storages);
- the zip ``torch.save`` archive (``*/data.pkl`` plus ``*/data/<key>``).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class UnsafePickleError(DataError):
    """The file asked for a global outside the allowlist; nothing was executed."""


class _StorageType:
    """Stands in for ``torch.<X>Storage`` classes: only their dtype matters."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None) -> torch.Tensor:
    """Safe twin of ``torch._utils._rebuild_tensor_v2``: a view checked against the storage."""
    if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
        raise DataError(f"tensor record has no raw storage (got {type(storage).__name__})")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise DataError(f"tensor record has an invalid layout: size {size} stride {stride}")
    if backward_hooks:
        raise DataError("tensor record carries backward hooks; refusing them")
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
        raise DataError(f"tensor record reaches past its storage ({storage.numel()} elements)")
    return storage.as_strided(size, stride, offset).clone()


def _rebuild_tensor_v1(storage, storage_offset, size, stride) -> torch.Tensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """numpy's protocol-2 pickles spell bytes as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DataError(f"unexpected _codecs.encode call with encoding {encoding!r}")
    return text.encode("latin1")


def _np_reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise DataError(f"numpy array subclass {cls!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _np_frombuffer(buffer, dtype, shape, order):
    """numpy's protocol-5 array record (raw bytes + dtype + shape), copied to own its memory."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise DataError("numpy buffer record with an object dtype")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy()


def _np_scalar_fn():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return scalar


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v1,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_mod, "scalar")] = _np_scalar_fn()
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _np_frombuffer
for _name, _dtype in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, persistent_load=None) -> None:
        super().__init__(file)
        self._path = path
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol <= 2 spells builtins the Python 2 way
            module = "builtins"
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda data: _load_legacy(io.BytesIO(data), self._path)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafePickleError(
            f"{self._path}: refused to load global {module}.{name}: only plain containers, "
            "tensors and numpy arrays are allowed; nothing from the file was executed"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise DataError(f"{self._path}: unexpected persistent id {pid!r} in a plain pickle")
        return self._persistent(pid)


def _storage_from_bytes(data: bytes | bytearray, dtype: torch.dtype, numel: int) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) < numel * itemsize:
        raise DataError(f"storage holds {len(data)} bytes, {numel * itemsize} expected")
    if numel == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data[: numel * itemsize]), dtype=dtype)


def _storage_record(pid: Any, path: Path) -> tuple[str, torch.dtype, int]:
    """(key, dtype, numel) of a ``('storage', type, key, location, numel, ...)`` id."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise DataError(f"{path}: unexpected persistent id {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
        raise DataError(f"{path}: storage {key} has an unknown type {storage_type!r}")
    if len(pid) > 5 and pid[5] is not None:
        raise DataError(f"{path}: storage views (pre-2018 torch files) are not supported")
    return key, storage_type.dtype, numel


def _load_legacy(stream: io.BytesIO, path: Path) -> Any:
    """The pre-zip ``torch.save`` stream; also nested in plain pickles of tensors."""
    header = [_Unpickler(stream, path).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise DataError(f"{path}: not a torch legacy stream (magic/protocol mismatch)")
    if isinstance(header[2], dict) and not header[2].get("little_endian", True):
        raise DataError(f"{path}: big-endian torch files are not supported")
    # The raw storages follow the object pickle, and their element sizes are
    # only named inside it: a first pass (tensors stubbed out) collects the
    # storage records, then the storages are read, then the real pass runs.
    start = stream.tell()
    records: dict[str, tuple[torch.dtype, int]] = {}

    def collect(pid):
        key, dtype, numel = _storage_record(pid, path)
        records[key] = (dtype, numel)

    _CollectUnpickler(stream, path, collect).load()
    keys = _Unpickler(stream, path).load()
    if not isinstance(keys, list):
        raise DataError(f"{path}: malformed torch stream (storage key list missing)")
    storages: dict[str, torch.Tensor] = {}
    for key in map(str, keys):
        if key not in records:
            raise DataError(f"{path}: storage {key} is stored but never referenced")
        dtype, _ = records[key]
        count = stream.read(8)
        if len(count) != 8:
            raise DataError(f"{path}: storage {key} is truncated")
        (numel,) = struct.unpack("<q", count)
        itemsize = torch.empty((), dtype=dtype).element_size()
        storages[key] = _storage_from_bytes(stream.read(numel * itemsize), dtype, numel)
    end = stream.tell()
    stream.seek(start)

    def resolve(pid):
        key = _storage_record(pid, path)[0]
        if key not in storages:
            raise DataError(f"{path}: storage {key} is referenced but not stored")
        return storages[key]

    obj = _Unpickler(stream, path, resolve).load()
    stream.seek(end)
    return obj


class _CollectUnpickler(_Unpickler):
    """Walks an object pickle for its storage ids; tensors become placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if found is _rebuild_tensor or found is _rebuild_tensor_v1:
            return _placeholder
        return found


def _placeholder(*args: Any, **kwargs: Any) -> None:
    return None


def _load_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise DataError(f"{path}: not a valid torch zip archive ({err})") from None
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise DataError(f"{path}: torch zip archive without a single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and archive.read(order).strip() != b"little":
            raise DataError(f"{path}: big-endian torch files are not supported")

        def resolve(pid):
            key, dtype, numel = _storage_record(pid, path)
            try:
                data = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise DataError(f"{path}: storage {key} is referenced but not stored") from None
            return _storage_from_bytes(data, dtype, numel)

        return _Unpickler(io.BytesIO(archive.read(pkl[0])), path, resolve).load()


def load_untrusted(path: str | Path) -> Any:
    """Load a pickle or ``torch.save`` file that may come from anywhere.

    Returns the stored object with tensors on the CPU. Raises
    ``UnsafePickleError`` when the file asks for anything outside the
    allowlist (before it runs), ``DataError`` when the file is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            if f.read(4) == b"PK\x03\x04":
                return _load_zip(path)
        stream = io.BytesIO(path.read_bytes())
        first = _Unpickler(stream, path).load()
        if type(first) is int and first == _LEGACY_MAGIC:
            stream.seek(0)
            return _load_legacy(stream, path)
        return first
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error,
            AttributeError, IndexError, KeyError, RuntimeError) as err:
        raise DataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
