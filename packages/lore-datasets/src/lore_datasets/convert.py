"""Write a reference-format source once in the canonical form, and read that from then on.

The reference files are pickles (read with a restricted unpickler, but slow
and large); the canonical form is ``benchmark.safetensors`` + ``benchmark.json``
(``Benchmark.save``), safe to load and memory-mappable. The split is made
here, with the seed, and stored with its meta.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import DataError
from .pairs import Benchmark
from .personalllm import load_personalllm
from .prism import load_prism
from .tldr import load_tldr

REFERENCE_LOADERS: dict[str, Callable[..., Benchmark]] = {
    "tldr": load_tldr,
    "prism": load_prism,
    "personalllm": load_personalllm,
}


def convert(name: str, data_dir: str | Path, out_dir: str | Path, *, seed: int = 0,
            **options: Any) -> Benchmark:
    """Load ``name`` from ``data_dir`` with the seed and save it canonically to ``out_dir``."""
    if name not in REFERENCE_LOADERS:
        raise DataError(f"unknown reference source {name!r}; expected one of "
                        f"{', '.join(REFERENCE_LOADERS)}")
    bench = REFERENCE_LOADERS[name](data_dir, seed=seed, **options)
    bench.meta = {**bench.meta, "converted_from": str(Path(data_dir).resolve())}
    bench.save(out_dir)
    return bench
