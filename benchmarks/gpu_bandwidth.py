"""How close the CUDA row pass comes to HBM bandwidth: Z's bytes over the op's time,
against the device's own copy bandwidth measured in the same run.

For each point (d, M, dtype; 40 pairs per user, K = 8, sorted users) it times, with
CUDA events and the median of ``--repeat`` runs after a warm-up call (which builds
the op's row index, once per user tensor):

- ``fused``: ``lore_kernels.lowrank_bt`` (row pass + merges + the GEMMs over users);
- ``margin``: ``lore_kernels.lowrank_margin`` (the row pass without gradients);
- ``read``: ``Z.sum()``, torch's read of Z.

and reports ``z_gbps = bytes(Z) / time`` and its fraction of the copy bandwidth
(``copy_gbps``: a ``dst.copy_(src)`` of ``--copy-gib`` GiB, counting the bytes read
and written). Z is read once by design, so ``fused_frac_of_copy`` is the fraction
of HBM bandwidth the op achieves. With ``--ncu`` (and Nsight Compute's ``ncu`` on
PATH) each point's row kernel is profiled once more for ``dram__bytes_read.sum``,
reported against Z's size (1.0 = Z read exactly once).

    python benchmarks/gpu_bandwidth.py --json out/bandwidth.json
    python benchmarks/gpu_bandwidth.py --points 384x65536:bf16 --repeat 5
    python benchmarks/gpu_bandwidth.py --list            # the points, no GPU needed
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_POINTS = (
    "4096x65536:bf16,4096x65536:fp32,4096x1048576:bf16,4096x1048576:fp32,"
    "384x65536:bf16,384x65536:fp32,384x1048576:bf16,384x1048576:fp32"
)
PAIRS_PER_USER = 40
K = 8
TAU = 0.01


class Point(NamedTuple):
    d: int
    M: int
    dtype: str

    @property
    def z_bytes(self) -> int:
        return self.d * self.M * torch.tensor([], dtype=DTYPES[self.dtype]).element_size()

    @property
    def label(self) -> str:
        return f"{self.d}x{self.M}:{self.dtype}"


def parse_points(text: str) -> list[Point]:
    """``DxM:dtype`` entries separated by commas (e.g. ``4096x65536:bf16``)."""
    points = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            shape, dtype = item.split(":")
            d, M = (int(v) for v in shape.lower().split("x"))
        except ValueError:
            raise ValueError(
                f"--points: {item!r} is not DxM:dtype (e.g. 4096x65536:bf16)"
            ) from None
        if dtype not in DTYPES or d < 1 or M < 1:
            raise ValueError(f"--points: {item!r}: dtype one of {', '.join(DTYPES)}, d and M >= 1")
        points.append(Point(d, M, dtype))
    return points


def make_inputs(p: Point, device: torch.device) -> tuple:
    """Sorted users with PAIRS_PER_USER rows each (the last may have fewer)."""
    g = torch.Generator(device=device).manual_seed(0)
    N = max(1, -(-p.M // PAIRS_PER_USER))
    user = torch.arange(p.M, device=device) // PAIRS_PER_USER
    Z = torch.randn(p.M, p.d, generator=g, device=device, dtype=DTYPES[p.dtype])
    V = torch.randn(p.d, K, generator=g, device=device) / p.d**0.5
    S = torch.softmax(torch.randn(N, K, generator=g, device=device), dim=1)
    weight = torch.full((p.M,), 1.0 / PAIRS_PER_USER, device=device)
    return Z, user, weight, V, S


def time_ms(fn, repeat: int) -> float:
    """Median time of fn() in ms over `repeat` runs, by CUDA events (after one warm-up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_gbps(gib: float, repeat: int) -> float:
    """Device copy bandwidth (bytes read + written per second, in GB/s)."""
    n = int(gib * 2**30) // 4
    src = torch.empty(n, dtype=torch.float32, device="cuda").fill_(1.0)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), repeat)
    return 2 * n * 4 / (ms * 1e-3) / 1e9  # the caller empties the cache once these are freed


def measure(p: Point, repeat: int, copy: float) -> dict:
    import lore_kernels

    Z, user, weight, V, S = make_inputs(p, torch.device("cuda"))
    out = {"point": p._asdict(), "z_bytes": p.z_bytes, "backend": lore_kernels.backend(Z.device)}
    runs = {
        "fused": lambda: lore_kernels.lowrank_bt(Z, user, weight, V, S, TAU),
        "margin": lambda: lore_kernels.lowrank_margin(Z, user, V, S),
        "read": lambda: Z.sum(),
    }
    for name, fn in runs.items():
        ms = time_ms(fn, repeat)
        gbps = p.z_bytes / (ms * 1e-3) / 1e9
        out[f"{name}_ms"] = round(ms, 4)
        out[f"{name}_z_gbps"] = round(gbps, 1)
        out[f"{name}_frac_of_copy"] = round(gbps / copy, 3)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    runs["fused"]()
    torch.cuda.synchronize()
    out["fused_extra_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    return out


def parse_ncu_csv(text: str, kernel_fragment: str = "rows_kernel") -> float | None:
    """Sum of dram__bytes_read.sum (in bytes) over the profiled kernels whose name
    contains `kernel_fragment`, from ``ncu --csv`` output; None when absent."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not lines:
        return None
    scale = {"byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12}
    total, found = 0.0, False
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        if row.get("Metric Name") != "dram__bytes_read.sum":
            continue
        if kernel_fragment not in row.get("Kernel Name", ""):
            continue
        unit = row.get("Metric Unit", "byte").strip().lower()
        total += float(row["Metric Value"].replace(",", "")) * scale.get(unit, 1)
        found = True
    return total if found else None


def ncu_dram_read(p: Point, timeout: int) -> dict:
    """DRAM bytes read by the row kernel of one fused call, by Nsight Compute."""
    ncu = shutil.which("ncu")
    if ncu is None:
        return {"ncu": "not found"}
    cmd = [ncu, "--csv", "--metrics", "dram__bytes_read.sum", "-k", "regex:rows_kernel",
           "-c", "1", sys.executable, __file__, "--child", p.label]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ncu": f"timed out after {timeout} s"}
    read = parse_ncu_csv(proc.stdout)
    if read is None:
        return {"ncu": "no metric in output", "ncu_tail": (proc.stdout + proc.stderr)[-600:]}
    return {"dram_read_bytes": read, "dram_read_over_z": round(read / p.z_bytes, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", default=DEFAULT_POINTS, help="DxM:dtype,... (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--copy-gib", type=float, default=2.0)
    ap.add_argument("--ncu", action="store_true", help="profile DRAM bytes read (needs ncu)")
    ap.add_argument("--ncu-timeout", type=int, default=90)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--list", action="store_true", help="print the points and exit (no GPU)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one fused call, for ncu
    args = ap.parse_args(argv)
    try:
        points = parse_points(args.child or args.points)
    except ValueError as err:
        ap.error(str(err))
    if args.list:
        for p in points:
            print(f"{p.label}  Z = {p.z_bytes / 2**30:.2f} GiB")
        return 0
    if not torch.cuda.is_available():
        print("gpu_bandwidth: error: no CUDA device", file=sys.stderr)
        return 2
    if args.child:
        import lore_kernels

        Z, user, weight, V, S = make_inputs(points[0], torch.device("cuda"))
        lore_kernels.lowrank_bt(Z, user, weight, V, S, TAU)
        torch.cuda.synchronize()
        return 0
    copy = copy_gbps(args.copy_gib, args.repeat)
    torch.cuda.empty_cache()
    result = {"device": torch.cuda.get_device_name(), "copy_gbps": round(copy, 1),
              "pairs_per_user": PAIRS_PER_USER, "K": K, "torch": torch.__version__,
              "points": []}  # fmt: skip
    print(f"device {result['device']}: copy {copy:.0f} GB/s (read + write)")
    for p in points:
        row = measure(p, args.repeat, copy)
        if args.ncu:
            row.update(ncu_dram_read(p, args.ncu_timeout))
        result["points"].append(row)
        print(json.dumps(row))
        torch.cuda.empty_cache()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    sys.exit(main())
