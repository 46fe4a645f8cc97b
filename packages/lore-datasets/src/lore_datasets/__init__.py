"""lore_datasets: multi-user preference pairs, loaders and seeded splits.

    from lore_datasets import load_dataset, SplitConfig
    bench = load_dataset("llmfao")                    # bundled, CC BY 4.0
    bench = load_dataset("path/to/dir", split=SplitConfig(seed=1))
    bench.seen_train.features, bench.seen_train.user  # [M, d] rows, [M] user index
    bench.meta["split"]["counts"]                     # what the split did

``load_generic`` reads a directory (comparisons.csv, responses.jsonl,
embeddings.npy) into ``PreferencePairs``; ``split_benchmark`` cuts those into a
``Benchmark``; ``synthetic_benchmark`` plants low-rank users and returns the
``Oracle``. Bad input raises ``DataError`` naming the file, line and user.
"""

from .errors import DataError, DatasetUnavailable
from .generic import load_generic
from .pairs import SPLITS, Benchmark, PreferencePairs
from .registry import DATASETS, load_dataset
from .splits import SplitConfig, split_benchmark
from .synthetic import Oracle, make_synthetic, synthetic_benchmark
from .validation import ValidationSplit, split_validation

__all__ = [
    "DATASETS",
    "SPLITS",
    "Benchmark",
    "DataError",
    "DatasetUnavailable",
    "Oracle",
    "PreferencePairs",
    "SplitConfig",
    "ValidationSplit",
    "load_dataset",
    "load_generic",
    "make_synthetic",
    "split_benchmark",
    "split_validation",
    "synthetic_benchmark",
]
__version__ = "0.1.0"
