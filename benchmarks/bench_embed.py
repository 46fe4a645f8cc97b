"""Embedding throughput: the original pipeline against token budgets and shared prompts.

A tiny random Llama-style reward model (``lore_datasets.embed.tiny``, made
wide and deep enough that the matrix products dominate) embeds TL;DR-like
data: prompts of ~300 tokens, each judged with 2-4 responses of 30-60
tokens. Three runs of the real resumable pipeline (``embed_resumable``,
shards, manifest and merge included) on the same rows, in one process:

- ``legacy``: today's pipeline (``legacy=True``): 8 rows per batch, sorted
  within each 512-row shard, every row computed whole;
- ``budget``: a global length sort and batches of ``--budget`` padded tokens;
- ``shared``: the same, with each prompt's common token prefix computed once
  and its responses on top of the cached keys and values (the default).

Reported per run: wall time, real and padded tokens, the padding fraction,
tokens saved, and "data tokens/s" (the tokens of the rows as written,
``plain_tokens``, over the wall time: the rate at which the data set is
embedded, comparable across runs). The ratios are against ``legacy`` of
the same run, by wall time and by the process's CPU time (on a shared
machine other jobs stretch the wall time unevenly between runs; with one
torch thread the CPU time is what the run itself computed); the largest
difference of each run's embeddings from ``legacy``'s is printed too (fp32:
rounding only).

    python benchmarks/bench_embed.py                 # ~1-2 min on one core
    python benchmarks/bench_embed.py --quick --json out.json
    python benchmarks/bench_embed.py --device cuda --dtype bf16 --hidden 2048 --layers 8 \
        --prompts 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lore_datasets.embed.pipeline import embed_resumable
from lore_datasets.embed.reward_model import RewardModelEmbedder
from lore_datasets.embed.tiny import WORDS, tiny_reward_model, tiny_tokenizer

TARGET_PADDING = 0.01
TARGET_SPEEDUP = 1.5


def tldr_like(prompts: int, seed: int, prompt_tokens: int = 300,
              responses: tuple[int, int] = (2, 4), response_tokens: tuple[int, int] = (30, 60)
              ) -> list[list[dict[str, str]]]:
    """Conversations [user: post, assistant: summary], a post's summaries adjacent."""
    rng = random.Random(seed)
    out = []
    for _ in range(prompts):
        n = max(50, int(rng.gauss(prompt_tokens, prompt_tokens / 6)))
        post = " ".join(rng.choice(WORDS) for _ in range(n))
        seen: set[str] = set()
        for _ in range(rng.randint(*responses)):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*response_tokens)))
            if text not in seen:
                seen.add(text)
                out.append([{"role": "user", "content": post},
                            {"role": "assistant", "content": text}])
    return out


def run(name: str, embedder: RewardModelEmbedder, conversations: list, shard_size: int
        ) -> tuple[dict[str, Any], np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        matrix = np.array(embed_resumable(conversations, embedder, Path(tmp) / "shards", name,
                                          Path(tmp) / "emb.npy", shard_size=shard_size,
                                          progress=False))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = embedder.stats
    row = {"run": name, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), **stats.as_dict(),
           "data_tokens_per_s": round(stats.plain_tokens / wall, 1),
           "data_tokens_per_cpu_s": round(stats.plain_tokens / cpu, 1)}
    return row, matrix


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompts", type=int, default=150, help="distinct posts (2-4 rows each)")
    p.add_argument("--hidden", type=int, default=256, help="model width")
    p.add_argument("--layers", type=int, default=4, help="model depth")
    p.add_argument("--budget", type=int, default=32768, help="padded tokens per batch")
    p.add_argument("--legacy-batch", type=int, default=8, help="rows per batch of the old path")
    p.add_argument("--shard-size", type=int, default=512, help="rows per resumable shard")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (on a GPU, pass a bigger "
                   "--hidden/--layers, e.g. 2048 and 8, so the model is worth a GPU)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="model dtype")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a small run (CI)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.hidden, args.layers = 24, 64, 2
    torch.set_num_threads(args.threads)
    conversations = tldr_like(args.prompts, args.seed)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = tiny_reward_model(hidden_size=args.hidden, num_layers=args.layers, max_positions=1024,
                              dtype=dtype).to(args.device)
    tokenizer = tiny_tokenizer("left")

    def embedder(**kw: Any) -> RewardModelEmbedder:
        return RewardModelEmbedder(model, tokenizer, name="tiny", **kw)

    rows, mats = [], {}
    for name, kw in (("legacy", {"legacy": True, "batch_size": args.legacy_batch}),
                     ("budget", {"max_batch_tokens": args.budget, "shared_prompts": False}),
                     ("shared", {"max_batch_tokens": args.budget, "shared_prompts": True})):
        row, mats[name] = run(name, embedder(**kw), conversations, args.shard_size)
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["speedup_vs_legacy"] = round(row["data_tokens_per_s"] / base["data_tokens_per_s"], 3)
        row["cpu_speedup_vs_legacy"] = round(
            row["data_tokens_per_cpu_s"] / base["data_tokens_per_cpu_s"], 3)
        row["max_abs_diff_vs_legacy"] = float(np.abs(mats[row["run"]] - mats["legacy"]).max())
    by = {r["run"]: r for r in rows}
    checks = {
        "budget_padding<=1%": by["budget"]["padding_fraction"] <= TARGET_PADDING,
        "shared_padding<=1%": by["shared"]["padding_fraction"] <= TARGET_PADDING,
        "shared_speedup>=1.5x": by["shared"]["speedup_vs_legacy"] >= TARGET_SPEEDUP,
        "shared_cpu_speedup>=1.5x": by["shared"]["cpu_speedup_vs_legacy"] >= TARGET_SPEEDUP,
    }
    result = {
        "setup": {"rows": len(conversations), "prompts": args.prompts, "hidden": args.hidden,
                  "layers": args.layers, "budget": args.budget, "legacy_batch": args.legacy_batch,
                  "shard_size": args.shard_size, "threads": args.threads,
                  "device": args.device, "dtype": args.dtype,
                  "torch": torch.__version__, "machine": platform.processor() or platform.machine()},
        "runs": rows, "checks": checks,
    }
    cols = ("run", "wall_s", "cpu_s", "tokens", "padded", "padding_fraction", "saved_fraction",
            "data_tokens_per_s", "speedup_vs_legacy", "cpu_speedup_vs_legacy",
            "max_abs_diff_vs_legacy")
    print(" ".join(f"{c:>14}" for c in cols))
    for row in rows:
        print(" ".join(f"{row[c]:>14.4g}" if isinstance(row[c], float) else f"{row[c]:>14}"
                       for c in cols))
    print("checks:", ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in checks.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
