"""A tiny generic-layout data set written into tmp_path, with knobs to break it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

HEADER = ["user_id", "prompt_id", "response_a", "response_b", "label", "note"]

# Four responses over two prompts; row i of the matrix embeds response i.
RESPONSES = [("r0", "p0"), ("r1", "p0"), ("r2", "p1"), ("r3", "p1")]
EMB = np.array(
    [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]], dtype=np.float32
)
COMPARISONS = [
    ["alice", "p0", "r0", "r1", "a", "x"],
    ["alice", "p1", "r2", "r3", "b", ""],
    ["bob", "p0", "r0", "r1", "tie", ""],
    ["bob", "p1", "r3", "r2", "a", ""],
    ["carol", "p0", "r1", "r0", "tie", ""],
]


def write_dataset(
    directory: Path,
    comparisons: list[list[str]] | None = None,
    responses: list[tuple[str, str]] | None = None,
    emb: np.ndarray | None = None,
    header: list[str] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "comparisons.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header or HEADER)
        writer.writerows(COMPARISONS if comparisons is None else comparisons)
    with (directory / "responses.jsonl").open("w") as f:
        for rid, pid in RESPONSES if responses is None else responses:
            f.write(
                json.dumps({"response_id": rid, "prompt_id": pid, "text": f"text of {rid}"}) + "\n"
            )
    np.save(directory / "embeddings.npy", EMB if emb is None else emb)
    return directory


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def make_dataset(tmp_path: Path):
    """``make_dataset(name, comparisons=..., responses=..., emb=..., header=...)`` -> directory."""

    def make(name: str = "data", **kwargs) -> Path:
        return write_dataset(tmp_path / name, **kwargs)

    return make
