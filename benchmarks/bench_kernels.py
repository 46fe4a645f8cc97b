"""Time one training step of the low-rank BT loss: torch reference vs the fused op.

For each (M, d, K, dtype) it prints, from one run: the torch-reference step
(``lowrank_bt_reference``), a plain-torch two-matmul step in Z's own dtype (the
best a torch user would write: Z@V, then GᵀZ), the fused op, a plain read of
Z (``Z.sum()``, the memory-bandwidth floor), the speed-up of fused over the
reference, fused time over the read, and the fused op's GB/s counting the
bytes of Z (with % of peak HBM bandwidth on known GPUs).

Timing: the methods are run round-robin ``--repeat`` times and the median is
kept, so load from other processes hits every method alike; compare ratios
within one run, not absolute times across runs.

    python benchmarks/bench_kernels.py                      # the full CPU grid
    python benchmarks/bench_kernels.py --quick              # a small subset
    python benchmarks/bench_kernels.py --M 65536 --d 4096 --K 8 --json out.json
    python benchmarks/bench_kernels.py --device cuda --M 262144 --d 4096 --K 1,4,8,16 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import lore_kernels
from lore_kernels.reference import bt_terms_reference, lowrank_bt_reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TAU = 0.01

# Peak HBM bandwidth in TB/s by device-name fragment (vendor datasheets).
PEAK_TBPS = {
    "H200": 4.8,
    "H100 PCIe": 2.0,
    "H100 NVL": 3.9,
    "H100": 3.35,
    "A100-SXM4-80GB": 2.039,
    "A100 80GB PCIe": 1.935,
    "A100": 1.555,
    "L40S": 0.864,
    "A10G": 0.6,
}


def peak_tbps(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, tbps in PEAK_TBPS.items():
        if fragment in name:
            return tbps
    return None


def make_inputs(M: int, d: int, K: int, dtype: torch.dtype, device="cpu", users: int = 1000):
    """Sorted users with user_mean weights, as the trainer passes them."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(0)
    N = max(1, min(users, M))
    user = torch.randint(0, N, (M,), generator=g, device=device).sort().values
    counts = torch.bincount(user, minlength=N).clamp_min(1).float()
    Z = torch.randn(M, d, generator=g, device=device).to(dtype)
    V = torch.randn(d, K, generator=g, device=device) / d**0.5
    S = torch.softmax(torch.randn(N, K, generator=g, device=device), dim=1)
    weight = 1.0 / counts[user]
    return Z, user, weight, V, S, TAU


def torch_two_matmuls(Z, user, weight, V, S, tau):
    """The plain-torch step in Z's dtype: P = Z V and dV = Zᵀ G as two GEMMs."""
    P = (Z @ V.to(Z.dtype)).float()
    S_rows = S[user]
    margin = (P * S_rows).sum(dim=1)
    losses, g = bt_terms_reference(margin, weight, tau)  # the one copy of the BT formula
    loss = losses.sum()
    G = g[:, None] * S_rows
    dV = (G.to(Z.dtype).T @ Z).float().T
    dS = torch.zeros_like(S).index_add_(0, user, g[:, None] * P)
    return loss, margin, dV, dS


def plain_read(Z, *_):
    return Z.sum()


def methods(device: torch.device) -> dict[str, Callable]:
    found = {"reference": lowrank_bt_reference, "torch_2mm": torch_two_matmuls}
    if lore_kernels.backend(device) != "torch":
        found["fused"] = lore_kernels.lowrank_bt
    found["read"] = plain_read
    return found


def time_round_robin(fns: dict[str, Callable], args, repeat: int, device) -> dict[str, float]:
    """Median seconds per method, the methods interleaved within each repeat."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():  # warm-up: allocations, page faults, kernel caches
        fn(*args)
    sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn(*args)
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def run_one(M, d, K, dtype_name, device, repeat) -> dict:
    args = make_inputs(M, d, K, DTYPES[dtype_name], device)
    secs = time_round_robin(methods(device), args, repeat, device)
    z_bytes = args[0].numel() * args[0].element_size()
    row = {"M": M, "d": d, "K": K, "dtype": dtype_name}
    row.update({f"{name}_ms": round(s * 1e3, 3) for name, s in secs.items()})
    if "fused" in secs:
        row["speedup_vs_reference"] = round(secs["reference"] / secs["fused"], 2)
        row["speedup_vs_torch_2mm"] = round(secs["torch_2mm"] / secs["fused"], 2)
        row["fused_over_read"] = round(secs["fused"] / secs["read"], 2)
        row["fused_GBps"] = round(z_bytes / secs["fused"] / 1e9, 1)
        peak = peak_tbps(device)
        if peak:
            row["fused_pct_peak"] = round(100 * z_bytes / secs["fused"] / (peak * 1e12), 1)
    row["read_GBps"] = round(z_bytes / secs["read"] / 1e9, 1)
    del args
    return row


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "device_type": device.type,
        "backend": lore_kernels.backend(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["peak_TBps"] = peak_tbps(device)
    elif info["backend"] == "cpu":
        torch.ops.lore.project(torch.zeros(1, 1), torch.zeros(1, 1))
        info["cpu_isa"] = ["generic", "avx2", "avx512"][torch.ops.lore._cpu_last_call()[0]]
    return info


def print_row(row: dict) -> None:
    def ms(key):
        return f"{row[key]:9.1f}" if key in row else f"{'-':>9}"

    def x(key):
        return f"{row[key]:7.2f}" if key in row else f"{'-':>7}"

    pct = f" {row['fused_pct_peak']:5.1f}%" if "fused_pct_peak" in row else ""
    gbps = f"{row['fused_GBps']:8.1f}" if "fused_GBps" in row else f"{'-':>8}"
    print(
        f"{row['M']:>7} {row['d']:>5} {row['K']:>3} {row['dtype']:>5} |"
        f"{ms('reference_ms')}{ms('torch_2mm_ms')}{ms('fused_ms')}{ms('read_ms')} |"
        f"{x('speedup_vs_reference')}{x('speedup_vs_torch_2mm')}{x('fused_over_read')} |{gbps}{pct}",
        flush=True,
    )


def ints(text: str) -> list[int]:
    """'16k,65536' -> [16384, 65536] (k = 1024)."""
    values = [v.strip().lower() for v in text.split(",")]
    return [int(v[:-1]) * 1024 if v.endswith("k") else int(v) for v in values]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--M", type=ints, default=[16 * 1024, 64 * 1024], help="rows, e.g. 16k,64k")
    parser.add_argument("--d", type=ints, default=[384, 4096])
    parser.add_argument("--K", type=ints, default=[1, 4, 8, 32])
    parser.add_argument("--dtype", default="fp32,bf16", help="fp32,bf16,fp16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="M=16k, d=384,4096, K=8, 3 repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.M, args.d, args.K, args.repeat = [16 * 1024], [384, 4096], [8], 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = describe(device)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(
        f"{'M':>7} {'d':>5} {'K':>3} {'dtype':>5} |{'ref ms':>9}{'2mm ms':>9}{'fused ms':>9}{'read ms':>9} |"
        f"{'xref':>7}{'x2mm':>7}{'f/read':>7} |{'GB/s':>8}"
    )
    rows = []
    for dtype_name in args.dtype.split(","):
        for M in args.M:
            for d in args.d:
                for K in args.K:
                    row = run_one(M, d, K, dtype_name, device, args.repeat)
                    print_row(row)
                    rows.append(row)
    result = {**info, "results": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
