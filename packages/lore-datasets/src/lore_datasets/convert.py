"""Write a source once in the canonical form, and read that from then on.

The reference files are pickles (read with a restricted unpickler, but slow
and large); the canonical form (``storage.py``: ``benchmark.json`` +
safetensors, rows sorted by user, optionally sharded) is safe to load,
memory-mappable and readable one block of users at a time. The split is
made here, with the seed, and stored with its meta. Any other name
``load_dataset`` knows (bundled, synthetic, a generic or canonical
directory) converts the same way, e.g. to shard it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError
from .pairs import Benchmark
from .registry import REFERENCE_LOADERS, load_dataset
from .storage import save_benchmark


def convert(name: str, data_dir: str | Path | None, out_dir: str | Path, *, seed: int = 0,
            max_shard_bytes: int | None = None, **options: Any) -> Benchmark:
    """Load ``name`` with the split seed and save it canonically to ``out_dir``."""
    if Path(out_dir).resolve() in (Path(name).resolve(), Path(data_dir or name).resolve()):
        raise DataError(f"{out_dir}: the output directory is the input; choose another --out")
    if name in REFERENCE_LOADERS:
        if data_dir is None:
            raise DataError(f"{name}: needs the directory of its reference files (--data-dir)")
        bench = REFERENCE_LOADERS[name](data_dir, seed=seed, **options)
        bench.meta = {**bench.meta, "converted_from": str(Path(data_dir).resolve())}
    else:
        if options:
            raise DataError(f"{name}: options {sorted(options)} apply to reference sources only")
        source = Path(name)
        canonical = source.is_dir() and (source / "benchmark.json").is_file()
        bench = load_dataset(name, data_dir=data_dir, split=None if canonical else {"seed": seed})
        bench.meta = {**bench.meta, "converted_from": str(source.resolve()) if source.is_dir() else name}
    save_benchmark(bench, out_dir, max_shard_bytes=max_shard_bytes)
    return bench
