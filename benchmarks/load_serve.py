"""Load test of lore-serve: mixed scoring and adaptation from N clients for T seconds.

    python benchmarks/load_serve.py --clients 16 --seconds 30 --json load.json

Without ``--url`` it builds a tiny export (``--hidden-size``/``--layers``;
``--model DIR`` serves an existing one instead), starts ``lore-serve --port 0``
in a subprocess on a fresh store, and samples the server's resident memory
(RSS, from /proc) every second: a leak shows as growth in the run's second
half. With ``--url`` it drives a server that is already running (the serve
benchmark uses it as its client process). The run is bounded in time
(``--seconds``) and in count (``--max-requests``). The mix (``--mix``)
defaults to 70% ``/v1/score`` (``--responses`` responses of ``--words``
words), 15% ``/get_reward``, 10% comparisons posted to one of ``--users``
users (each a refit and a durable commit) and 5% ``/suggest``. It prints
requests/s, p50/p99 latency overall and per kind, the errors (which must be
0) and the RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_MIX = "score=70,get_reward=15,comparisons=10,suggest=5"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def texts(words: int, k: int) -> str:
    """A response of exactly ``words`` vocabulary words (every one a token of the tiny model)."""
    from lore_datasets.embed.tiny import tiny_text

    return tiny_text(k, words)


def request_maker(mix: str, *, responses: int, words: int, users: int, seed: int
                  ) -> Callable[[int], tuple[str, str, str, dict[str, Any]]]:
    """i -> (kind, method, path, body) of the i-th request of the mix (seeded)."""
    kinds, weights = [], []
    for part in mix.split(","):
        name, _, weight = part.partition("=")
        if name not in ("score", "get_reward", "comparisons", "suggest"):
            raise ValueError(f"--mix: unknown request kind {name!r}")
        kinds.append(name)
        weights.append(float(weight or 1))
    rng = random.Random(seed)
    prompt = texts(8, 1)

    def make(i: int) -> tuple[str, str, str, dict[str, Any]]:
        kind = rng.choices(kinds, weights)[0]
        user = f"load-{rng.randrange(users)}"
        answers = [texts(words, i * responses + j) for j in range(responses)]
        if kind == "score":
            return kind, "POST", "/v1/score", {"user": user, "prompt": prompt,
                                               "responses": answers}
        if kind == "get_reward":
            return kind, "POST", "/get_reward", {"query": [prompt + " " + a for a in answers],
                                                 "prompts": [prompt] * responses,
                                                 "labels": [user] * responses}
        if kind == "comparisons":
            return kind, "POST", f"/v1/users/{user}/comparisons", {
                "prompt": prompt, "chosen": answers[0], "rejected": texts(max(1, words - 1), i)}
        return kind, "POST", f"/v1/users/{user}/suggest", {
            "prompt": prompt, "candidates": [*answers, texts(max(1, words - 2), i)], "n": 2}
    return make


async def drive(url: str, make: Callable[[int], tuple[str, str, str, dict[str, Any]]], *,
                clients: int, seconds: float, max_requests: int,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``clients`` concurrent connections sending requests until time or count runs out."""
    import httpx

    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    issued = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits,
                                 headers=headers) as client:
        async def worker() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                kind, method, path, body = make(issued)
                issued += 1
                start = time.perf_counter()
                try:
                    got = await client.request(method, path, json=body)
                    if got.status_code >= 400:
                        errors.append(f"{kind} {got.status_code}: {got.text[:200]}")
                except httpx.HTTPError as err:
                    errors.append(f"{kind} {type(err).__name__}: {err}")
                latencies.setdefault(kind, []).append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    every = [x for v in latencies.values() for x in v]
    return {
        "clients": clients, "requests": len(every), "seconds": wall,
        "requests_per_s": len(every) / wall if wall > 0 else 0.0,
        "p50_ms": 1000 * percentile(every, 50), "p99_ms": 1000 * percentile(every, 99),
        "by_kind": {k: {"requests": len(v), "p50_ms": 1000 * percentile(v, 50),
                        "p99_ms": 1000 * percentile(v, 99)} for k, v in sorted(latencies.items())},
        "errors": len(errors), "first_errors": errors[:5],
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_export(root: Path, hidden_size: int, layers: int) -> Path:
    """A tiny export whose backbone has the given size (the real export path)."""
    from transformers.utils import logging as hf_logging

    from lore_train.tiny_export import build_tiny_export

    hf_logging.disable_progress_bar()
    return build_tiny_export(root, hidden_size=hidden_size, num_layers=layers,
                             max_positions=512).out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="drive this running server (else start one)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--mix", default=DEFAULT_MIX, help="kind=weight,... of score, get_reward, "
                   "comparisons, suggest (default: %(default)s)")
    p.add_argument("--responses", type=int, default=4, help="responses per scoring request")
    p.add_argument("--words", type=int, default=24, help="words per response")
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, help="serve this export (else build a tiny one)")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--json", help="write the results here ('-': stdout only, as JSON)")
    args = p.parse_args(argv)

    make = request_maker(args.mix, responses=args.responses, words=args.words,
                         users=args.users, seed=args.seed)
    run = lambda url: asyncio.run(drive(url, make, clients=args.clients,  # noqa: E731
                                        seconds=args.seconds, max_requests=args.max_requests))
    if args.url:
        result = run(args.url)
    else:
        with tempfile.TemporaryDirectory(prefix="lore-load-") as tmp:
            root = Path(tmp)
            export = args.model or build_export(root / "model", args.hidden_size, args.layers)
            from lore_train.serve.process import spawn_server

            proc, url = spawn_server(export, root / "users.db", root / "server.log",
                                     "--max-wait-ms", str(args.max_wait_ms))
            samples: list[tuple[float, float]] = []
            sampling = threading.Event()

            def sample() -> None:  # the server's RSS once a second, to see it level off
                start = time.perf_counter()
                while not sampling.wait(1.0):
                    samples.append((round(time.perf_counter() - start, 1), rss_mb(proc.pid)))

            sampler = threading.Thread(target=sample, daemon=True)
            try:
                rss_start = rss_mb(proc.pid)
                sampler.start()
                result = run(url)
                sampling.set()
                sampler.join()
                rss_end = rss_mb(proc.pid)
            finally:
                sampling.set()
                proc.terminate()
                proc.wait(60)
            half = [mb for t, mb in samples if t >= result["seconds"] / 2]
            result.update(rss_start_mb=rss_start, rss_end_mb=rss_end, rss_samples_mb=samples,
                          rss_growth_second_half_mb=half[-1] - half[0] if half else 0.0,
                          model=str(args.model) if args.model else
                          {"hidden_size": args.hidden_size, "layers": args.layers})
    result.update(mix=args.mix, responses=args.responses, words=args.words,
                  load_average=os.getloadavg()[0])
    if args.json == "-":
        print(json.dumps(result))
        return result
    print(f"{result['requests']} requests from {result['clients']} clients in "
          f"{result['seconds']:.1f} s: {result['requests_per_s']:.1f} req/s, "
          f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
          f"errors {result['errors']}")
    for kind, row in result["by_kind"].items():
        print(f"  {kind:12s} {row['requests']:6d}  p50 {row['p50_ms']:8.1f} ms  "
              f"p99 {row['p99_ms']:8.1f} ms")
    if "rss_start_mb" in result:
        print(f"server RSS: {result['rss_start_mb']:.0f} MiB at the start, "
              f"{result['rss_end_mb']:.0f} MiB at the end "
              f"({result['rss_growth_second_half_mb']:+.0f} MiB in the second half of the run)")
    for err in result["first_errors"]:
        print("  error:", err)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
