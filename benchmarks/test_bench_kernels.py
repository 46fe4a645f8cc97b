"""pytest-benchmark suite of the fused op (small shapes: one untimed pass in CI).

    pytest benchmarks/test_bench_kernels.py --benchmark-enable   # timed
The grid over M, d, K with speed-ups is benchmarks/bench_kernels.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import lore_kernels
from lore_kernels.reference import lowrank_bt_reference


def _load_bench():
    path = Path(__file__).with_name("bench_kernels.py")
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["reference", "torch_2mm", "fused", "read"])
def test_step(benchmark, method, dtype, device):
    device = torch.device(device)
    available = bench.methods(device)
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
