"""Data sets by name: bundled ones, the synthetic generator, and plain directories.

``LOADERS`` maps a name to a function ``(*, split, embeddings, data_dir,
keep_ties) -> Benchmark``. TL;DR, PRISM and PersonalLLM read the reference
pipelines' files from ``data_dir`` and split them the reference's way (only
the split seed can change). A name that is not registered but is a directory
is read in the generic layout (``generic.py``, picking up a
``v_ref.safetensors`` beside it), or as a canonical ``save_benchmark``
directory (``benchmark.json``), whose stored split is used as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import DataError
from .generic import load_generic
from .pairs import Benchmark
from .personalllm import load_personalllm
from .prism import load_prism
from .reference_files import read_v_ref
from .runtime.settings import from_dict
from .sharding import process_share
from .splits import SplitConfig, split_benchmark
from .storage import load_benchmark, read_process_share, row_range_readable
from .synthetic import synthetic_benchmark
from .textio import read_json
from .tldr import load_tldr

DATA_DIR = Path(__file__).parent / "data"

SplitArg = SplitConfig | dict[str, Any] | None
Loader = Callable[..., Benchmark]

# The reference pipelines' files: (data_dir, *, seed, ...) -> Benchmark, split their way.
REFERENCE_LOADERS: dict[str, Callable[..., Benchmark]] = {
    "tldr": load_tldr,
    "prism": load_prism,
    "personalllm": load_personalllm,
}


def load_dataset(
    name_or_path: str | Path,
    *,
    split: SplitArg = None,
    embeddings: str | Path | None = None,
    data_dir: str | Path | None = None,
    keep_ties: bool = False,
) -> Benchmark:
    """Load a data set and split it.

    ``split``: a full SplitConfig, a dict of changes to the data set's own
    default split (e.g. ``{"seed": 1}``), or None for that default.
    ``embeddings`` picks another matrix in the data directory (or an absolute
    path); ``data_dir`` points a named data set at another copy of its files.
    A registered name wins over a directory of the same name (use ``./name``).
    """
    name = str(name_or_path)
    loader = LOADERS.get(name)
    if loader is not None:
        return loader(split=split, embeddings=embeddings, data_dir=data_dir, keep_ties=keep_ties)
    if Path(name).is_dir():
        return _load_directory(Path(name), split, embeddings, keep_ties)
    raise DataError(
        f"unknown data set {name!r}: expected one of {', '.join(LOADERS)} "
        "or a directory with comparisons.csv, responses.jsonl and embeddings.npy"
    )


def _split_config(split: SplitArg, default: SplitConfig) -> SplitConfig:
    if split is None:
        return default
    if isinstance(split, SplitConfig):
        return split
    try:
        return replace(default, **split)
    except TypeError as e:
        raise DataError(f"bad split option: {e}") from None


def _embedder(sidecar: Path) -> str | None:
    """The ``model`` named in a JSON file describing an embedding matrix, if any."""
    if not sidecar.is_file():
        return None
    doc = read_json(sidecar, "a JSON object with a 'model' field")
    if not isinstance(doc, dict):
        raise DataError(f"{sidecar}: expected a JSON object with a 'model' field")
    return doc.get("model")


def _recipe(sidecar: Path) -> dict | None:
    """The ``recipe`` in an embeddings sidecar (chat template, pooling, dtype...), if any."""
    if not sidecar.is_file():
        return None
    doc = read_json(sidecar, "a JSON object with a 'model' field")
    recipe = doc.get("recipe") if isinstance(doc, dict) else None
    return recipe if isinstance(recipe, dict) else None


def _load_directory(
    directory: Path, split: SplitArg, embeddings: str | Path | None, keep_ties: bool
) -> Benchmark:
    if (directory / "benchmark.json").is_file():
        return load_benchmark(directory)
    pairs, meta = load_generic(directory, embeddings=embeddings, keep_ties=keep_ties)
    sidecar = (directory / meta["embeddings"]).with_suffix(".json")
    meta = {"source": str(directory), "embedder": _embedder(sidecar), **meta}
    recipe = _recipe(sidecar)
    if recipe is not None:  # how phi was made from text (`lore-prepare embed`)
        meta["embedder_recipe"] = recipe
    v_ref = read_v_ref(directory, pairs.dim) if embeddings is None else None
    return split_benchmark(pairs, _split_config(split, SplitConfig()), v_ref=v_ref, meta=meta)


def _bundled(name: str, default_split: SplitConfig, attribution: str) -> Loader:
    def load(*, split: SplitArg, embeddings, data_dir, keep_ties: bool) -> Benchmark:
        directory = Path(data_dir) if data_dir is not None else DATA_DIR / name
        pairs, meta = load_generic(directory, embeddings=embeddings, keep_ties=keep_ties)
        # emb_minilm.json describes the bundled embeddings.npy only.
        sidecar = directory / "emb_minilm.json"
        if embeddings is not None:
            sidecar = (directory / meta["embeddings"]).with_suffix(".json")
        meta = {
            "source": name,
            "embedder": _embedder(sidecar),
            "license": "CC BY 4.0",
            "attribution": attribution,
            **meta,
        }
        return split_benchmark(pairs, _split_config(split, default_split), meta=meta)

    return load


def _synthetic(*, split: SplitArg, embeddings, data_dir, keep_ties: bool) -> Benchmark:
    if embeddings is not None or data_dir is not None or keep_ties:
        raise DataError("synthetic: embeddings, data_dir and keep_ties do not apply")
    # The data are fixed (generator seed 0, make_synthetic defaults); the split seed varies.
    bench, _ = synthetic_benchmark(_split_config(split, SplitConfig()))
    return bench


def _reference(name: str) -> Loader:
    """A reference-format loader: files from ``data_dir``, the split's seed, nothing else."""

    def load(*, split: SplitArg, embeddings, data_dir, keep_ties: bool) -> Benchmark:
        if data_dir is None:
            raise DataError(f"{name}: needs the directory of its files (data_dir, or lore-train "
                            "--data-dir DIR); docs/datasets.md says how to make them")
        if not Path(data_dir).is_dir():
            raise DataError(f"{name}: data directory {data_dir} not found")
        if embeddings is not None or keep_ties:
            raise DataError(f"{name}: embeddings and keep_ties do not apply (the files fix both)")
        config = _split_config(split, SplitConfig())
        changed = [k for k, v in asdict(config).items() if k != "seed" and v != getattr(SplitConfig(), k)]
        if changed:
            raise DataError(f"{name}: the reference split is fixed; only the seed can change "
                            f"(got {', '.join(changed)})")
        return REFERENCE_LOADERS[name](data_dir, seed=config.seed)

    return load


LOADERS: dict[str, Loader] = {
    # LLMFAO has only 13 prompts, so "auto" splits it by pair; 20 non-tie pairs
    # per user keeps 56 of 124 workers (4,850 of 5,460 pairs).
    "llmfao": _bundled(
        "llmfao",
        SplitConfig(min_pairs_per_user=20),
        "LLMFAO by Dmitry Ustalov (github.com/dustalov/llmfao), prompts and responses from "
        "the llmonitor.com Crowdsourced LLM Benchmark; CC BY 4.0; see data/llmfao/ATTRIBUTION.md",
    ),
    # 32 topic/stance prompts: "auto" holds out a quarter of them for testing.
    "ukpconvarg1": _bundled(
        "ukpconvarg1",
        SplitConfig(min_pairs_per_user=20),
        "UKPConvArg1 by Ivan Habernal and Iryna Gurevych (ACL 2016), "
        "github.com/UKPLab/acl2016-convincing-arguments; CC BY 4.0; "
        "see data/ukpconvarg1/ATTRIBUTION.md",
    ),
    "synthetic": _synthetic,
    "tldr": _reference("tldr"),
    "prism": _reference("prism"),
    "personalllm": _reference("personalllm"),
}
DATASETS: tuple[str, ...] = tuple(LOADERS)


@dataclass(frozen=True)
class DataSource:
    """Which data set to read and how (how to split it is `SplitConfig`'s job).

    The arguments of `load_dataset` other than the split, as one record that
    commands turn into flags and results files store.
    """

    dataset: str = field(default="llmfao", metadata={
        "help": f"a bundled or known data set ({', '.join(DATASETS)}) "
        "or a directory in the generic layout (comparisons.csv, responses.jsonl, embeddings.npy)"})
    data_dir: str | None = field(default=None, metadata={
        "help": "where the files of tldr/prism/personalllm are (or another copy of a bundled set)"})
    embeddings: str | None = field(default=None, metadata={
        "help": "embedding matrix (.npy) to use instead of embeddings.npy"})
    keep_ties: bool = field(default=False, metadata={
        "help": "keep tied comparisons (they are dropped otherwise)"})

    def load(self, split: SplitArg = None) -> Benchmark:
        """`load_dataset` with these settings."""
        return load_dataset(self.dataset, split=split, embeddings=self.embeddings,
                            data_dir=self.data_dir, keep_ties=self.keep_ties)

    def load_process_share(self, process_rank: int, world_size: int,
                           split: SplitArg = None) -> Benchmark:
        """Process ``process_rank``'s pair-balanced share of the split data (docs/scale.md).

        A saved Benchmark directory in the row-range form is read by row
        range: this process reads its users' rows and nothing else (its
        stored split is used as is, as `load` does). Any other source is
        loaded whole and then cut (`sharding.process_share`), so every process
        briefly holds all of it.
        """
        if self.dataset not in LOADERS and row_range_readable(self.dataset):
            return read_process_share(self.dataset, process_rank, world_size)
        return process_share(self.load(split), process_rank, world_size)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "data source") -> DataSource:
        """A stored data source; unknown keys are an error naming ``source``."""
        return from_dict(cls, data, source=source)
