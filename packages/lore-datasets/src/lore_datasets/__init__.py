"""lore_datasets: multi-user preference pairs, loaders and seeded splits.

    from lore_datasets import load_dataset, SplitConfig
    bench = load_dataset("llmfao")                    # bundled, CC BY 4.0
    bench = load_dataset("path/to/dir", split=SplitConfig(seed=1))
    bench.seen_train.features, bench.seen_train.user  # [M, d] rows, [M] user index
    bench.meta["split"]["counts"]                     # what the split did

Large data: ``save_benchmark(bench, dir, max_shard_bytes=...)`` stores rows by
user (optionally sharded) and ``load_benchmark(dir)`` reads them back; ``user_offsets`` and ``read_users`` /
``read_benchmark_users`` read one block of users without the rest,
``balanced_user_blocks`` plans pair-balanced blocks per process (``read_process_share``
reads one process's share), and
``write_synthetic`` streams planted users to disk (docs/scale.md).

``load_generic`` reads a directory (comparisons.csv, responses.jsonl,
embeddings.npy) into ``PreferencePairs``; ``split_benchmark`` cuts those into a
``Benchmark``; ``split_validation`` carves a seeded validation split from
training pairs (whole prompts where there are enough); ``synthetic_benchmark``
plants low-rank users and returns the ``Oracle``. Bad input raises ``DataError`` naming the file, line and user.
``DataSource`` and ``SplitConfig`` are the data settings as records (stored in
results files, turned into command flags by ``lore_datasets.runtime.settings``);
``lore_datasets.runtime`` is what every lore command shares (errors as one
line, the device, output directories, settings as flags, the process group
under torchrun); ``lore_datasets.cli`` is the `lore-prepare` command.
"""

from .errors import DataError, DatasetUnavailable
from .generic import load_generic
from .pairs import SPLIT_LABELS, SPLITS, Benchmark, PreferencePairs
from .registry import DATASETS, DataSource, load_dataset
from .sharding import balanced_user_blocks, block_pairs
from .splits import SplitConfig, split_benchmark
from .storage import (
    load_benchmark,
    read_benchmark_users,
    read_process_share,
    read_users,
    save_benchmark,
    user_offsets,
)
from .synthetic import Oracle, SyntheticSpec, make_synthetic, synthetic_benchmark
from .synthetic_stream import write_synthetic
from .validation import ValidationSplit, split_validation

__all__ = [
    "DATASETS",
    "SPLITS",
    "SPLIT_LABELS",
    "Benchmark",
    "DataError",
    "DataSource",
    "DatasetUnavailable",
    "Oracle",
    "PreferencePairs",
    "SplitConfig",
    "SyntheticSpec",
    "ValidationSplit",
    "balanced_user_blocks",
    "block_pairs",
    "load_benchmark",
    "load_dataset",
    "load_generic",
    "make_synthetic",
    "read_benchmark_users",
    "read_process_share",
    "read_users",
    "save_benchmark",
    "split_benchmark",
    "split_validation",
    "synthetic_benchmark",
    "user_offsets",
    "write_synthetic",
]
__version__ = "0.1.0"
