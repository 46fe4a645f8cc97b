"""lore-serve's dynamic batching: throughput with concurrent clients, and the server's
overhead over the backbone.

    python benchmarks/bench_serve.py --json benchmarks/results/serve.json

One run, loopback, a tiny local backbone built here (``--hidden-size``,
``--layers``: large enough that a forward costs more than an HTTP round
trip, or batching would have nothing to save). The server runs in this
process (a real uvicorn on 127.0.0.1); the clients run in a separate process
(`load_serve.py --url`), so their CPU time is not the server's. Every request
is a ``/v1/score`` of ``--responses`` responses of ``--words`` words.

1. one request at a time (1 client), then ``--clients`` concurrent clients:
   requests/s of each and their ratio (target >= 4), p50/p99 latency;
2. the server's overhead: the concurrent phase's wall time over the time of
   calling the backbone (`PersonalReward.basis_rewards`) directly, in this
   process, on batches of the same sizes and the same texts' shapes as the
   server formed (target <= 10%).

Timings on a shared machine move with its load: the ratios compare phases of
the same run, and the load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _load_serve() -> Any:
    """benchmarks/load_serve.py (the client process and the export builder)."""
    path = Path(__file__).with_name("load_serve.py")
    spec = importlib.util.spec_from_file_location("lore_benchmark_load_serve", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_clients(url: str, clients: int, requests: int, responses: int, words: int,
                seed: int) -> dict[str, Any]:
    """`load_serve.py --url` in a subprocess: ``requests`` scoring requests from ``clients``."""
    cmd = [sys.executable, str(Path(__file__).with_name("load_serve.py")), "--url", url,
           "--clients", str(clients), "--max-requests", str(requests), "--seconds", "600",
           "--mix", "score", "--responses", str(responses), "--words", str(words),
           "--seed", str(seed), "--json", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the client process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_direct(reward: Any, sizes: list[int], prompt: str, responses: list[str]) -> float:
    """Seconds of `basis_rewards` on batches of these sizes (the server's batches' shapes)."""
    total = 0.0
    for n in sizes:
        batch = [responses[k % len(responses)] for k in range(n)]
        start = time.perf_counter()
        reward.basis_rewards([prompt] * n, batch)
        total += time.perf_counter() - start
    return total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="serve this export (else build a tiny one)")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--sequential-requests", type=int, default=48)
    p.add_argument("--concurrent-requests", type=int, default=256)
    p.add_argument("--responses", type=int, default=2, help="responses per request")
    p.add_argument("--words", type=int, default=24, help="words (tokens) per response")
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--quick", action="store_true", help="a small, fast run (CI)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden_size, args.layers = 64, 2
        args.sequential_requests, args.concurrent_requests = 8, 48

    from transformers.utils import logging as hf_logging

    from lore_train import PersonalReward
    from lore_train.serve import ServeLimits, ServerThread, create_app

    hf_logging.disable_progress_bar()
    load = _load_serve()
    batches: list[tuple[int, int, float]] = []
    recording = False

    def on_batch(conversations: int, tokens: int, seconds: float) -> None:
        if recording:
            batches.append((conversations, tokens, seconds))

    with tempfile.TemporaryDirectory(prefix="lore-bench-serve-") as tmp:
        export = args.model or load.build_export(Path(tmp) / "model", args.hidden_size,
                                                  args.layers)
        reward = PersonalReward.from_pretrained(export, max_batch_tokens=args.max_batch_tokens)
        limits = ServeLimits(max_wait_ms=args.max_wait_ms, max_batch_tokens=args.max_batch_tokens,
                             max_responses=max(64, args.responses))
        app = create_app(reward, store=Path(tmp) / "users.db", limits=limits, on_batch=on_batch)
        with ServerThread(app) as url:
            run_clients(url, 4, 16, args.responses, args.words, seed=99)  # warm up
            sequential = run_clients(url, 1, args.sequential_requests, args.responses,
                                     args.words, seed=1)
            recording = True
            concurrent = run_clients(url, args.clients, args.concurrent_requests,
                                     args.responses, args.words, seed=2)
            recording = False
            # the backbone alone on the same batches, the server idle
            prompt = load.texts(8, 1)
            shapes = [load.texts(args.words, k) for k in range(18)]
            direct = time_direct(reward, [n for n, _, _ in batches], prompt, shapes)
    sizes = [n for n, _, _ in batches]
    result = {
        "model": {"export": str(args.model)} if args.model else
                 {"hidden_size": args.hidden_size, "layers": args.layers, "K": reward.K},
        "request": {"responses": args.responses, "words": args.words,
                    "max_wait_ms": args.max_wait_ms, "max_batch_tokens": args.max_batch_tokens},
        "sequential": sequential,
        "concurrent": concurrent,
        "throughput_ratio": concurrent["requests_per_s"] / sequential["requests_per_s"],
        "batches": {"count": len(sizes), "mean_conversations": sum(sizes) / max(1, len(sizes)),
                    "max_conversations": max(sizes, default=0)},
        "forward_in_server_s": sum(s for _, _, s in batches),
        "backbone_direct_s": direct,
        "server_overhead": concurrent["seconds"] / direct - 1 if direct > 0 else float("nan"),
        "torch_threads": __import__("torch").get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    backbone = args.model or f"tiny Llama, hidden {args.hidden_size}, {args.layers} layers"
    print(f"backbone: {backbone}, K={reward.K}; "
          f"requests: /v1/score, {args.responses} responses x {args.words} words")
    for name in ("sequential", "concurrent"):
        row = result[name]
        print(f"  {name:10s} {row['clients']:2d} client(s): {row['requests_per_s']:7.1f} req/s  "
              f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}")
    print(f"  throughput, {args.clients} clients / 1: {result['throughput_ratio']:.2f}x "
          f"(target >= 4)")
    print(f"  batches: {len(sizes)}, {result['batches']['mean_conversations']:.1f} conversations "
          f"on average (max {result['batches']['max_conversations']})")
    print(f"  server overhead over the backbone on the same batches: "
          f"{100 * result['server_overhead']:.1f}% (wall {concurrent['seconds']:.2f} s, backbone "
          f"{direct:.2f} s direct, {result['forward_in_server_s']:.2f} s inside the server; "
          f"target <= 10%)")
    print(f"  load average {result['load_average']:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
