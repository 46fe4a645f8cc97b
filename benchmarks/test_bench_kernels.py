"""pytest-benchmark suite of the fused op (small shapes: one untimed pass in CI).

    pytest benchmarks/test_bench_kernels.py --benchmark-enable   # timed
The grid over M, d, K with speed-ups is benchmarks/bench_kernels.py.
"""

from __future__ import annotations

import pytest
import torch

import lore_kernels
from lore_kernels.reference import lowrank_bt_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["fused", "read", "torch_2mm", "torch_heads", "reference"])
def test_step(benchmark, bench, method, dtype, device):
    device = torch.device(device)
    available = bench.providers(device, with_reference=True)
    if method not in available:
        pytest.skip(f"no native kernel for {device.type} (backend {lore_kernels.backend(device)})")
    args = bench.make_inputs(2048, 256, 8, bench.DTYPES[dtype], device, users=50)
    benchmark.group = f"lowrank_bt {dtype} {device.type}"
    out = benchmark(available[method], *args)
    if method == "read":
        assert torch.isfinite(out)
        return
    ref = lowrank_bt_reference(*args)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2 * b.abs().max().item())


def test_grid_row_has_speed_and_memory(bench, tmp_path):
    """One grid point end to end: ratios against a baseline of the same run, memory
    beside speed, JSON written."""
    out = tmp_path / "bench.json"
    result = bench.main(
        ["--M", "512", "--d", "64", "--K", "3", "--pairs-per-user", "4", "--dtype", "fp32",
         "--repeat", "1", "--json", str(out)]
    )  # fmt: skip
    row = result["results"][0]
    assert row["pairs_per_user"] == 4 and row["read_ms"] > 0
    assert row["best_torch"] in ("torch_2mm", "torch_heads")
    if "fused_ms" in row:
        assert row["fused_over_read"] > 0 and row["speedup_vs_best_torch"] > 0
    assert out.exists()


def test_grid_row_times_the_label_noise_likelihood(bench):
    result = bench.main(
        ["--M", "512", "--d", "64", "--K", "3", "--pairs-per-user", "4", "--dtype", "fp32",
         "--repeat", "1", "--with-label-noise"]
    )  # fmt: skip
    row = result["results"][0]
    if lore_kernels.backend("cpu") == "torch":
        pytest.skip("no native CPU kernel: nothing fused to time")
    assert row["label_noise_over_fused"] > 0
    args = bench.make_inputs(512, 64, 3, torch.float32, torch.device("cpu"), users=128)
    out = bench.fused_label_noise(*args)
    ref = lowrank_bt_reference(*args, bench.LABEL_NOISE)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
