"""The scale test: stream a large synthetic data set to disk, train on it under torchrun.

    python benchmarks/scale_torchrun.py --users 1000000 --pairs-per-user 20 --dim 32 \\
        --nproc 4 --K 4 --steps 10 --data /tmp/synth-1m --json scale.json --delete-data

1. ``lore-prepare synthetic`` writes the data in the row-range form in
   bounded memory (skipped when ``--data`` already holds it);
2. ``torchrun --nproc_per_node N`` runs ``lore-train`` on it (gloo on CPU):
   every process reads only its pair-balanced share;
3. each process reports its peak resident set (``ru_maxrss``) next to the
   bytes of its share of the rows, and process 0 the time per step, so the
   report shows memory per process = its share + a constant, not the whole.

``--allreduce`` instead times the one collective of a training step, the sum
of V's gradient (a d x K fp32 matrix), over ``--nproc`` gloo processes.
A small version runs in the test suite (benchmarks/test_scale_torchrun.py);
docs/scale.md has the numbers of the 1M-user run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--pairs-per-user", type=int, default=20)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--nproc", type=int, default=4)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fewshot-steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=Path("/tmp/lore-scale-data"))
    p.add_argument("--out", type=Path, default=None, help="lore-train output (default: DATA-run)")
    p.add_argument("--json", type=Path, default=None, help="write the report here too")
    p.add_argument("--delete-data", action="store_true", help="remove the data afterwards")
    p.add_argument("--allreduce", action="store_true", help="time the all-reduce of V's gradient")
    p.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:  # one process under torchrun: it ends itself, like lore-train
        from lore_datasets.runtime import collectives

        collectives.end_process(_worker(args.worker))
    if args.allreduce:
        return _torchrun(args.nproc, [__file__, "--worker", "allreduce"]).returncode
    report = run(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def run(args: argparse.Namespace) -> dict:
    out = args.out or args.data.with_name(args.data.name + "-run")
    report: dict = {"users": args.users, "pairs_per_user": args.pairs_per_user, "dim": args.dim,
                    "nproc": args.nproc, "K": args.K, "steps": args.steps}
    if not (args.data / "benchmark.json").is_file():
        start = time.perf_counter()
        subprocess.run([str(BIN / "lore-prepare"), "synthetic", "--users", str(args.users),
                        "--pairs-per-user", str(args.pairs_per_user), "--dim", str(args.dim),
                        "--rank", str(args.K), "--seed", str(args.seed), "--out", str(args.data)],
                       check=True)
        report["generate"] = {"seconds": round(time.perf_counter() - start, 1),
                              "peak_rss_mib": _peak_mib(resource.RUSAGE_CHILDREN)}
    report["data_bytes"] = sum(f.stat().st_size for f in args.data.iterdir())
    reports = out.with_name(out.name + "-ranks")
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    start = time.perf_counter()
    done = _torchrun(args.nproc, [__file__, "--worker", "train", str(reports), "--dataset",
                                  str(args.data), "--K", str(args.K), "--steps", str(args.steps),
                                  "--fewshot-steps", str(args.fewshot_steps), "--seed",
                                  str(args.seed), "--no-progress", "--out", str(out)])
    report["torchrun_seconds"] = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        raise SystemExit(f"torchrun failed with status {done.returncode}")
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(args.nproc)]
    results = json.loads((out / "results.json").read_text())
    cell = next(r for r in results["runs"] if r["K"] == args.K)
    report["train_seconds"] = round(cell["train_seconds"], 2)
    report["seconds_per_step"] = round(cell["train_seconds"] / max(args.steps, 1), 3)
    report["fewshot_seconds"] = round(cell["fewshot_seconds"], 2)
    report["accuracy"] = {s: round(cell[s]["mean"], 4) for s in
                          ("seen_train", "seen_test", "unseen_fewshot", "unseen_test")}
    report["ranks"] = ranks
    if args.delete_data:
        shutil.rmtree(args.data)
        shutil.rmtree(out)
    shutil.rmtree(reports)
    return report


def _torchrun(nproc: int, command: list[str]) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(port),
                           *command], env={**os.environ, "OMP_NUM_THREADS": "1"})


def _peak_mib(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss // 1024  # Linux: KiB


def _worker(argv: list[str]) -> int:
    kind, rest = argv[0], argv[1:]
    if kind == "allreduce":
        return _allreduce()
    reports, train_args = Path(rest[0]), rest[1:]
    import torch._dynamo  # noqa: F401  (Adam's first step imports it: seconds, not a step's cost)

    from lore_datasets import SPLITS
    from lore_datasets.sharding import process_blocks
    from lore_datasets.storage import user_offsets
    from lore_train.cli import main as lore_train

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    data = train_args[train_args.index("--dataset") + 1]
    start = time.perf_counter()
    code = lore_train(train_args)
    seconds = time.perf_counter() - start
    offsets = {s: user_offsets(data, s) for s in SPLITS}
    seen, unseen = process_blocks(offsets, rank, world)
    rows = {s: int(offsets[s][b] - offsets[s][a])
            for s in SPLITS for a, b in [seen if s.startswith("seen") else unseen]}
    dim = json.loads((Path(data) / "benchmark.json").read_text())["splits"]["seen_train"]["dim"]
    share = round(sum(rows.values()) * dim * 4 / 2**20, 1)
    peak = _peak_mib()
    (reports / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "seen_users": seen[1] - seen[0], "unseen_users": unseen[1] - unseen[0],
        "rows": sum(rows.values()), "share_mib": share, "peak_rss_mib": peak,
        "rss_minus_share_mib": round(peak - share, 1), "seconds": round(seconds, 1), "status": code}))
    return code


def _allreduce() -> int:
    """Median time of all_reduce(SUM) of a d x K fp32 matrix over gloo, per (d, K)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rows = []
    for d in (32, 4096):
        for K in (4, 8, 16, 32):
            t = torch.randn(d, K)
            for _ in range(5):
                dist.all_reduce(t)
            times = []
            for _ in range(50):
                start = time.perf_counter()
                dist.all_reduce(t)
                times.append(time.perf_counter() - start)
            times.sort()
            rows.append({"d": d, "K": K, "bytes": d * K * 4, "median_ms": round(times[25] * 1e3, 3)})
    if dist.get_rank() == 0:
        print(json.dumps({"world_size": dist.get_world_size(), "backend": "gloo",
                          "allreduce": rows}, indent=1))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
