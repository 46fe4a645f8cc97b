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

The three phases alternate for ``--rounds`` rounds and the ratios are the
medians of the rounds': timings on a shared machine move with its load, so
each ratio compares phases run back to back, and the load average is
recorded beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
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


def _round(sequential: dict[str, Any], concurrent: dict[str, Any],
           batches: list[tuple[int, int, float]], direct: float) -> dict[str, Any]:
    """One round's numbers: the two phases, the batches, the ratios."""
    sizes = [n for n, _, _ in batches]
    return {
        "sequential": sequential, "concurrent": concurrent,
        "throughput_ratio": concurrent["requests_per_s"] / sequential["requests_per_s"],
        "batches": {"count": len(sizes), "mean_conversations": sum(sizes) / max(1, len(sizes)),
                    "max_conversations": max(sizes, default=0)},
        "forward_in_server_s": sum(s for _, _, s in batches),
        "backbone_direct_s": direct,
        "server_overhead": concurrent["seconds"] / direct - 1 if direct > 0 else float("nan"),
    }


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
    p.add_argument("--rounds", type=int, default=3,
                   help="alternations of the phases; the ratios are their medians")
    p.add_argument("--quick", action="store_true", help="a small, fast run (CI)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden_size, args.layers = 64, 2
        args.sequential_requests, args.concurrent_requests, args.rounds = 8, 48, 1

    import torch
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
        prompt = load.texts(8, 1)
        shapes = [load.texts(args.words, k) for k in range(18)]
        rounds = []
        with ServerThread(app) as url:
            run_clients(url, 4, 16, args.responses, args.words, seed=99)  # warm up
            for r in range(args.rounds):  # phases alternate: a load drift hits all of them
                sequential = run_clients(url, 1, args.sequential_requests, args.responses,
                                         args.words, seed=10 * r + 1)
                batches.clear()
                recording = True
                concurrent = run_clients(url, args.clients, args.concurrent_requests,
                                         args.responses, args.words, seed=10 * r + 2)
                recording = False
                # the backbone alone on the same batches, the server idle
                direct = time_direct(reward, [n for n, _, _ in batches], prompt, shapes)
                rounds.append(_round(sequential, concurrent, list(batches), direct))
    result = {
        "model": {"export": str(args.model)} if args.model else
                 {"hidden_size": args.hidden_size, "layers": args.layers, "K": reward.K},
        "request": {"responses": args.responses, "words": args.words,
                    "max_wait_ms": args.max_wait_ms, "max_batch_tokens": args.max_batch_tokens},
        "rounds": rounds,
        "throughput_ratio": statistics.median(r["throughput_ratio"] for r in rounds),
        "server_overhead": statistics.median(r["server_overhead"] for r in rounds),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    result.update(sequential=rounds[-1]["sequential"], concurrent=rounds[-1]["concurrent"],
                  batches=rounds[-1]["batches"], backbone_direct_s=rounds[-1]["backbone_direct_s"])
    backbone = args.model or f"tiny Llama, hidden {args.hidden_size}, {args.layers} layers"
    print(f"backbone: {backbone}, K={reward.K}; "
          f"requests: /v1/score, {args.responses} responses x {args.words} words")
    for i, r in enumerate(rounds):
        print(f"round {i + 1}:")
        for name in ("sequential", "concurrent"):
            row = r[name]
            print(f"  {name:10s} {row['clients']:2d} client(s): {row['requests_per_s']:7.1f} "
                  f"req/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                  f"errors {row['errors']}")
        print(f"  batches: {r['batches']['count']}, {r['batches']['mean_conversations']:.1f} "
              f"conversations on average (max {r['batches']['max_conversations']}); wall "
              f"{r['concurrent']['seconds']:.2f} s, backbone {r['backbone_direct_s']:.2f} s "
              f"direct, {r['forward_in_server_s']:.2f} s inside the server")
        print(f"  throughput {args.clients} clients / 1: {r['throughput_ratio']:.2f}x, server "
              f"overhead {100 * r['server_overhead']:.1f}%")
    print(f"median of {len(rounds)} rounds: throughput {result['throughput_ratio']:.2f}x "
          f"(target >= 4), server overhead {100 * result['server_overhead']:.1f}% "
          f"(target <= 10%); load average {result['load_average']:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
