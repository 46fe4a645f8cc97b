"""benchmarks/bench_embed.py once, small (CI): the runs agree and the padding target holds."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")


def test_bench_embed_quick(embed_bench, tmp_path) -> None:
    bench = embed_bench
    out = tmp_path / "embed.json"
    result = bench.main(["--quick", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {"legacy", "budget", "shared"}
    for name in ("budget", "shared"):
        assert runs[name]["padding_fraction"] <= bench.TARGET_PADDING
        assert runs[name]["max_abs_diff_vs_legacy"] < 1e-4  # fp32: rounding only
    assert runs["shared"]["saved_fraction"] > 0.4  # 2-4 responses share each ~300-token post
    assert runs["shared"]["tokens"] < runs["legacy"]["tokens"]
    assert runs["budget"]["tokens"] == runs["legacy"]["tokens"] == runs["shared"]["plain_tokens"]
