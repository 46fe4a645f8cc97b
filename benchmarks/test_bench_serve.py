"""The serve benchmark and load test, each once, quickly (CI): they run end to end on a
real server and report what they promise. Their targets (>= 4x, <= 10%) are judged on a
quiet machine from a full run, not here."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    from lore_train.tiny_export import build_tiny_export

    return build_tiny_export(tmp_path_factory.mktemp("serve-bench"), hidden_size=32,
                             num_layers=2).out


@pytest.mark.slow
def test_bench_serve_reports_throughput_and_overhead(serve_bench, small_export, tmp_path):
    out = tmp_path / "serve.json"
    result = serve_bench.main(["--quick", "--model", str(small_export), "--json", str(out)])
    assert out.exists()
    for phase in ("sequential", "concurrent"):
        assert result[phase]["errors"] == 0 and result[phase]["requests"] > 0
        assert result[phase]["p99_ms"] >= result[phase]["p50_ms"] > 0
    assert result["concurrent"]["clients"] == 16 and result["sequential"]["clients"] == 1
    assert result["throughput_ratio"] > 0 and result["backbone_direct_s"] > 0
    assert len(result["rounds"]) == 1
    # 48 requests of 2 conversations from 16 clients: batched, not one forward per request
    assert result["batches"]["count"] < 48 and result["batches"]["max_conversations"] > 2


@pytest.mark.slow
def test_load_serve_mixed_load_has_no_errors(load_serve, small_export, tmp_path):
    result = load_serve.main(["--model", str(small_export), "--clients", "4", "--seconds", "3",
                              "--max-requests", "400", "--json", str(tmp_path / "load.json")])
    assert result["errors"] == 0, result["first_errors"]
    assert result["requests"] > 0 and set(result["by_kind"]) >= {"score", "comparisons"}
    assert result["rss_start_mb"] > 0 and result["rss_end_mb"] < 4 * result["rss_start_mb"]
