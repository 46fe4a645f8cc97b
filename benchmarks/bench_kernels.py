"""Time and memory of one training step of the low-rank BT loss, fused op vs plain torch.

One setup (``make_inputs``) is shared by every provider, and each grid point
reports, from one run:

- ``fused``: ``lore_kernels.lowrank_bt`` (the native kernel of the device);
- ``read``: a plain read of Z (``Z.sum()``), the memory-bandwidth floor;
- ``torch_2mm``: the per-row plain-torch step in Z's own dtype (Z @ V, then
  Gᵀ Z: two GEMMs, the best a torch user writes from the formula);
- ``torch_heads``: the per-user-head plain-torch step (H = S Vᵀ, margins by
  gathering H's rows, G by index_add): fewer flops, more memory;
- ``reference``: the fp32 oracle (only with ``--with-reference``: slow);
- ``per_row_kernel``: the earlier per-row fused kernel's time on the same
  (M, d, K, dtype), read from ``--old-json`` where it was measured.

Ratios: fused over the read, and the best plain-torch step over fused. Peak
memory is the extra memory a provider takes beyond its inputs (GPU: the
allocator's peak; CPU on Linux: the process's peak resident set, reset
before each provider through /proc/self/clear_refs).

Timing: providers run round-robin ``--repeat`` times and the median is kept,
so load from other processes hits every provider alike; compare ratios
within one run, not absolute times across runs.

    python benchmarks/bench_kernels.py                            # the CPU grid
    python benchmarks/bench_kernels.py --quick                    # a small subset
    python benchmarks/bench_kernels.py --json benchmarks/results/cpu-2threads-kernels.json
    python benchmarks/bench_kernels.py --device cuda --M 262144 --d 4096 --dtype bf16
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
from lore_kernels.reference import Likelihood, lowrank_bt_reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TAU = 0.01
RESULTS = Path(__file__).with_name("results")
PER_ROW_JSON = RESULTS / "cpu-2threads-kernels-per-row.json"

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


def make_inputs(
    M: int, d: int, K: int, dtype: torch.dtype, device="cpu", users: int = 1000
) -> tuple:
    """Sorted users (random sizes around M / users) with user_mean weights, as the
    trainer passes them."""
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
    """The per-row plain-torch step in Z's dtype: P = Z V and dV = Zᵀ G as two GEMMs."""
    P = (Z @ V.to(Z.dtype)).float()
    S_rows = S[user]
    margin = (P * S_rows).sum(dim=1)
    losses, g = Likelihood(tau).terms(margin, weight)
    dV = (Z.T @ (g[:, None] * S_rows).to(Z.dtype)).float()
    dS = torch.zeros_like(S).index_add_(0, user, g[:, None] * P)
    return losses.sum(), margin, dV, dS


def torch_user_heads(Z, user, weight, V, S, tau):
    """The per-user-head plain-torch step: H = S Vᵀ, margins through H[user], G by index_add."""
    H = (S @ V.T).to(Z.dtype)
    margin = (Z * H[user]).sum(dim=1, dtype=torch.float32)
    losses, g = Likelihood(tau).terms(margin, weight)
    G = torch.zeros(S.shape[0], Z.shape[1], dtype=Z.dtype, device=Z.device)
    G.index_add_(0, user, g.to(Z.dtype)[:, None] * Z)
    G = G.float()
    return losses.sum(), margin, G.T @ S, G @ V


def plain_read(Z, *_):
    return Z.sum()


LABEL_NOISE = 0.1  # the rate --with-label-noise times


def fused_label_noise(Z, user, weight, V, S, tau):
    """The fused step with the label-noise likelihood (a log and a division more per row)."""
    return lore_kernels.lowrank_bt(Z, user, weight, V, S, tau, LABEL_NOISE)


def providers(device: torch.device, with_reference: bool = False,
              with_label_noise: bool = False) -> dict[str, Callable]:
    found: dict[str, Callable] = {}
    if lore_kernels.backend(device) != "torch":
        found["fused"] = lore_kernels.lowrank_bt
        if with_label_noise:
            found["fused_label_noise"] = fused_label_noise
    found["read"] = plain_read
    found["torch_2mm"] = torch_two_matmuls
    found["torch_heads"] = torch_user_heads
    if with_reference:
        found["reference"] = lowrank_bt_reference
    return found


def time_round_robin(fns: dict[str, Callable], args, repeat: int, device) -> dict[str, float]:
    """Median seconds per provider, the providers interleaved within each repeat."""
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


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_extra_bytes(fn: Callable, args, device: torch.device) -> int | None:
    """Memory a call takes beyond what exists before it (None where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn(*args)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set size
        before = _status_kib("VmRSS")
        fn(*args)
        return max(0, _status_kib("VmHWM") - before) * 1024
    except (OSError, KeyError):
        return None


def per_row_kernel_times(path: Path | None) -> dict[tuple, float]:
    """(M, d, K, dtype) -> ms of the earlier per-row kernel, where it was measured."""
    if path is None or not path.exists():
        return {}
    rows = json.loads(path.read_text())["results"]
    return {(r["M"], r["d"], r["K"], r["dtype"]): r["fused_ms"] for r in rows if "fused_ms" in r}


def run_one(M, d, K, pairs_per_user, dtype_name, device, repeat, fns, old) -> dict:
    args = make_inputs(M, d, K, DTYPES[dtype_name], device, users=max(1, M // pairs_per_user))
    secs = time_round_robin(fns, args, repeat, device)
    z_bytes = args[0].numel() * args[0].element_size()
    row = {"M": M, "d": d, "K": K, "pairs_per_user": pairs_per_user, "dtype": dtype_name}
    row.update({f"{name}_ms": round(s * 1e3, 3) for name, s in secs.items()})
    if (M, d, K, dtype_name) in old:
        row["per_row_kernel_ms"] = old[(M, d, K, dtype_name)]
    best = min(("torch_2mm", "torch_heads"), key=lambda name: secs[name])
    row["best_torch"] = best
    if "fused" in secs:
        row["fused_over_read"] = round(secs["fused"] / secs["read"], 2)
        row["speedup_vs_best_torch"] = round(secs[best] / secs["fused"], 2)
        row["fused_GBps"] = round(z_bytes / secs["fused"] / 1e9, 1)
        if "fused_label_noise" in secs:
            row["label_noise_over_fused"] = round(secs["fused_label_noise"] / secs["fused"], 2)
        peak = peak_tbps(device)
        if peak:
            row["fused_pct_peak"] = round(100 * z_bytes / secs["fused"] / (peak * 1e12), 1)
    row["read_GBps"] = round(z_bytes / secs["read"] / 1e9, 1)
    row["z_MB"] = round(z_bytes / 1e6, 1)
    for name in ("fused", "torch_2mm", "torch_heads"):
        if name in fns:
            extra = peak_extra_bytes(fns[name], args, device)
            if extra is not None:
                row[f"{name}_peak_MB"] = round(extra / 1e6, 1)
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
        "lore_kernels": lore_kernels.__version__,
        "threads": torch.get_num_threads(),
        "algorithm": "per-user heads",
    }
    if device.type == "cuda":
        info["peak_TBps"] = peak_tbps(device)
    elif info["backend"] == "cpu":
        torch.ops.lore.project(torch.zeros(1, 1), torch.zeros(1, 1))
        info["cpu_isa"] = ["generic", "avx2", "avx512"][torch.ops.lore._cpu_last_call()[0]]
    return info


HEADER = (
    f"{'M':>6} {'d':>5} {'K':>3} {'n/u':>4} {'dtype':>5} |"
    f"{'fused':>8}{'read':>8}{'2mm':>8}{'heads':>8}{'old':>8} |"
    f"{'f/read':>7}{'xtorch':>7} |{'MB fused':>9}{'2mm':>7}{'heads':>7}"
)


def print_row(row: dict) -> None:
    def ms(key):
        return f"{row[key]:8.1f}" if key in row else f"{'-':>8}"

    def x(key):
        return f"{row[key]:7.2f}" if key in row else f"{'-':>7}"

    def mb(key, width):
        return f"{row[key]:{width}.0f}" if key in row else f"{'-':>{width}}"

    pct = f" {row['fused_pct_peak']:5.1f}% HBM" if "fused_pct_peak" in row else ""
    if "label_noise_over_fused" in row:
        pct += f"  label noise x{row['label_noise_over_fused']:.2f}"
    print(
        f"{row['M']:>6} {row['d']:>5} {row['K']:>3} {row['pairs_per_user']:>4} {row['dtype']:>5} |"
        f"{ms('fused_ms')}{ms('read_ms')}{ms('torch_2mm_ms')}{ms('torch_heads_ms')}"
        f"{ms('per_row_kernel_ms')} |{x('fused_over_read')}{x('speedup_vs_best_torch')} |"
        f"{mb('fused_peak_MB', 9)}{mb('torch_2mm_peak_MB', 7)}{mb('torch_heads_peak_MB', 7)}{pct}",
        flush=True,
    )


def ints(text: str) -> list[int]:
    """'16k,65536' -> [16384, 65536] (k = 1024)."""
    values = [v.strip().lower() for v in text.split(",")]
    return [int(v[:-1]) * 1024 if v.endswith("k") else int(v) for v in values]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--M", type=ints, default=[64 * 1024], help="rows, e.g. 16k,64k")
    parser.add_argument("--d", type=ints, default=[384, 4096])
    parser.add_argument("--K", type=ints, default=[1, 8, 25, 64])
    parser.add_argument("--pairs-per-user", type=ints, default=[4, 40, 400])
    parser.add_argument("--dtype", default="fp32,bf16", help="fp32,bf16,fp16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--with-reference", action="store_true", help="also time the fp32 oracle")
    parser.add_argument("--with-label-noise", action="store_true",
                        help=f"also time the fused step at label_noise={LABEL_NOISE}")
    parser.add_argument("--old-json", type=Path, default=PER_ROW_JSON,
                        help="earlier per-row kernel results for the 'old' column")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="M=16k, d=384,4096, K=8, 3 repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.M, args.d, args.K, args.pairs_per_user, args.repeat = (
            [16384],
            [384, 4096],
            [8],
            [40],
            3,
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = describe(device)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(HEADER)
    fns = providers(device, args.with_reference, args.with_label_noise)
    old = per_row_kernel_times(args.old_json) if device.type == "cpu" else {}
    rows = []
    for dtype_name in args.dtype.split(","):
        for M in args.M:
            for d in args.d:
                for n in args.pairs_per_user:
                    for K in args.K:
                        row = run_one(M, d, K, n, dtype_name, device, args.repeat, fns, old)
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
