"""lore_datasets: multi-user preference pairs, loaders and seeded splits."""

from .pairs import SPLITS, Benchmark, PreferencePairs

__all__ = ["SPLITS", "Benchmark", "PreferencePairs"]
__version__ = "0.1.0"
