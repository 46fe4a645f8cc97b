"""``lore-prepare``: embed text pairs, convert a data set to the canonical form, or stream planted users.

    lore-prepare embed --source tldr --model Skywork/Skywork-Reward-Llama-3.1-8B-v0.2 --out data/tldr
    lore-prepare embed --source pairs --pairs my_pairs.jsonl --encoder minilm --out data/mine
    torchrun --nproc_per_node 8 $(which lore-prepare) embed --source prism --out data/prism
    lore-prepare convert --dataset prism --data-dir data/prism_ref --out data/prism_canonical
    lore-prepare convert --dataset llmfao --out data/llmfao-canonical --max-shard-size 64MB
    lore-prepare synthetic --users 1000000 --pairs-per-user 20 --dim 32 --out data/synth-1m

Only argument parsing and printing live here; the work is in the library.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import hub
from .convert import convert
from .embed.pipeline import TextPair, embed_pairs, embed_personalllm
from .embed.reward_model import (
    ATTENTION,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_LENGTH,
    RewardModelEmbedder,
)
from .embed.sentence import SentenceEmbedder
from .errors import DataError
from .hub_files import source_rows
from .personalllm import write_score_settings
from .runtime import collectives
from .runtime.cli import (
    ArgumentParser,
    console_entry,
    resolve_device,
    run_cli,
    run_cli_to_the_end,
)
from .runtime.outputs import check_output_dir
from .synthetic_stream import DEFAULT_SHARD_BYTES, check_synthetic_sizes, write_synthetic
from .textio import json_lines

DEFAULT_MODEL = "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"
DTYPES = ("bfloat16", "float16", "float32")
EMBED_TIMEOUT = 1800.0  # processes wait for the slowest one's last shard, not one step
SYNTHETIC_USERS = 1000  # a few MB: the million-user scale test asks for it with --users
# `lore-prepare synthetic`'s sizing flags and defaults, by `SyntheticSpec` field
SYNTHETIC_FLAGS = {"num_users": "--users", "pairs_per_user": "--pairs-per-user", "dim": "--dim",
                   "rank": "--rank", "num_prompts": "--prompts",
                   "max_shard_bytes": "--max-shard-size"}
SYNTHETIC_DEFAULTS = {"num_users": SYNTHETIC_USERS, "pairs_per_user": 20, "dim": 32, "rank": 4,
                      "num_prompts": 200, "max_shard_bytes": DEFAULT_SHARD_BYTES}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lore-prepare", description="Embed text pairs with a reward model (or "
                       "MiniLM), convert any data set to the canonical form, or write planted "
                       "synthetic users: the files lore-train reads.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed", help="text pairs -> embeddings in a layout lore-train reads",
                       description="Embed (prompt, chosen, rejected) pairs from a hub data set or "
                       "a JSONL file with a reward model (its final hidden state; its score head "
                       "becomes v_ref) or the MiniLM sentence encoder, in resumable shards. "
                       "See docs/datasets.md.")
    e.add_argument("--source", required=True, choices=("tldr", "prism", "personalllm", "pairs"),
                   help="a hub data set (network, or --data-dir with its files) or a local JSONL "
                   "of pairs")
    e.add_argument("--data-dir", type=Path, default=None,
                   help="a local copy of the hub files in the hub's layout (no network needed)")
    e.add_argument("--min-confidence", type=int, default=None,
                   help="tldr: keep rows whose extra.confidence (1-9) is at least this")
    e.add_argument("--normalize", choices=("none", "zscore"), default=None,
                   help="personalllm: how lore-train mixes the 10 reward models' scores "
                   "(recorded in scores.json; default: none, the reference's raw mix)")
    e.add_argument("--cost-sign", choices=("raw", "flip"), default=None,
                   help="personalllm: beaver_7b is a cost model (higher = worse); flip negates "
                   "it (default: raw, as the reference)")
    e.add_argument("--pairs", type=Path, help="JSONL, one object per line: user_id, prompt "
                   "(text or chat messages), chosen, rejected[, prompt_id, split]")
    e.add_argument("--out", type=Path, required=True, help="output directory (rerun to resume)")
    e.add_argument("--model", default=DEFAULT_MODEL, help="HF sequence-classification reward model")
    e.add_argument("--encoder", choices=("reward-model", "minilm"), default="reward-model",
                   help="minilm: all-MiniLM-L6-v2 sentence encoder on CPU (no v_ref)")
    e.add_argument("--dtype", choices=DTYPES, default=None,
                   help="model dtype (default: bfloat16 on GPU, float32 on CPU)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--batch-size", type=int, default=8,
                   help="rows per batch of --legacy-batching (and of --encoder minilm)")
    e.add_argument("--max-batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                   help="padded tokens per forward pass (halved on a CUDA out-of-memory error)")
    e.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                   help="keep at most this many tokens, cut from the left; 0: no cut")
    e.add_argument("--attention", choices=ATTENTION, default="auto",
                   help="attention kernel (auto: flash_attention_2 on CUDA when installed, else sdpa)")
    e.add_argument("--no-shared-prompts", action="store_true",
                   help="compute every row whole (default: a prompt's common prefix once)")
    e.add_argument("--legacy-batching", action="store_true",
                   help="the original pipeline: --batch-size rows per batch, no global sort")
    e.add_argument("--shard-size", type=int, default=512, help="rows per resumable shard")
    e.add_argument("--limit", type=int, default=None,
                   help="first N hub rows per split, for a quick test (default: all)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument("--dist-timeout", type=float, default=EMBED_TIMEOUT,
                   help="under torchrun: seconds a process waits for the others (at the start, "
                   "and for the slowest to finish its shards) before every process fails")
    c = sub.add_parser("convert", help="any data set -> the canonical safetensors + JSON form "
                       "(rows by user, readable one block of users at a time)",
                       description="Load a data set as lore-train would (split included) and "
                       "write it as safetensors + JSON, rows sorted by user, optionally in shards, "
                       "so that each process of a distributed run reads only its users' rows.")
    c.add_argument("--dataset", required=True,
                   help="tldr, prism, personalllm (reference files in --data-dir), a bundled name, "
                   "synthetic, or a data directory (generic layout or canonical, to re-shard)")
    c.add_argument("--data-dir", type=Path, default=None,
                   help="where the files of tldr/prism/personalllm are (or another copy of a "
                   "bundled set)")
    c.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    c.add_argument("--seed", type=int, default=0, help="split seed")
    c.add_argument("--max-shard-size", type=parse_size, default=None,
                   help="cut each split's rows into files of about this size (e.g. 2GB, 512MiB) "
                   "(default: one file per split)")
    c.add_argument("--normalize", choices=("none", "zscore"), default=None,
                   help="personalllm: mix raw scores or per-model z-scores (default: as in "
                   "scores.json, else none)")
    c.add_argument("--cost-sign", choices=("raw", "flip"), default=None,
                   help="personalllm: keep or negate the beaver_7b cost model (default: as in "
                   "scores.json, else raw)")
    g = sub.add_parser("synthetic", help="stream planted low-rank users into the canonical form "
                       "in bounded memory",
                       description="Draw users from a planted rank-K model (a shared basis, "
                       "per-user mixtures, labels flipped at --label-noise) and write them in the "
                       "canonical sharded form, a block of users at a time, so any --users fits "
                       "in memory. About 2.6 KB per user at the defaults: --users 1000000 is the "
                       "2.6 GB scale test.")
    g.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    g.add_argument("--users", type=int, default=SYNTHETIC_DEFAULTS["num_users"],
                   help="number of users")
    g.add_argument("--pairs-per-user", type=int, default=SYNTHETIC_DEFAULTS["pairs_per_user"],
                   help="pairs drawn for each user")
    g.add_argument("--dim", type=int, default=SYNTHETIC_DEFAULTS["dim"],
                   help="embedding dimension d")
    g.add_argument("--rank", type=int, default=SYNTHETIC_DEFAULTS["rank"],
                   help="planted rank K")
    g.add_argument("--label-noise", type=float, default=0.05,
                   help="share of labels flipped at random")
    g.add_argument("--prompts", type=int, default=SYNTHETIC_DEFAULTS["num_prompts"],
                   help="distinct prompt ids the pairs share")
    g.add_argument("--seed", type=int, default=0, help="generator and split seed")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="stored embedding dtype")
    g.add_argument("--max-shard-size", type=parse_size, default="64MiB",  # = DEFAULT_SHARD_BYTES
                   help="cut each split's rows into files of about this size")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"convert": _convert, "synthetic": _synthetic}

    def run() -> int:
        check_output_dir(args.out)  # a file or an unwritable place fails before any work
        return commands.get(args.command, _embed)(args)

    if args.command not in commands and collectives.world_size() > 1:  # embed under torchrun
        return run_cli_to_the_end("lore-prepare", run, expected=(collectives.PeerFailure,))
    return run_cli("lore-prepare", run, expected=(collectives.PeerFailure,))


def entry() -> int:
    """The `lore-prepare` console script (`lore_datasets.runtime.cli.console_entry`)."""
    return console_entry(main)


def _convert(args: argparse.Namespace) -> int:
    options = {k: v for k, v in (("normalize", args.normalize), ("cost_sign", args.cost_sign))
               if v is not None}
    if options and args.dataset != "personalllm":
        raise DataError("--normalize and --cost-sign go with --dataset personalllm")
    bench = convert(args.dataset, args.data_dir, args.out, seed=args.seed,
                    max_shard_bytes=args.max_shard_size, **options)
    counts = bench.meta.get("split", bench.meta).get("counts", {})
    print(f"wrote {args.out}/benchmark.json + safetensors: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def parse_size(text: str) -> int:
    """``2GB`` (10^9), ``512MiB`` (2^20 * 512), or a plain number of bytes."""
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit):
            number, scale = upper[: -len(unit)], factor
            break
    else:
        number, scale = upper, 1
    try:
        size = int(float(number) * scale)
    except (ValueError, OverflowError):  # "abc", "nan", "inf"
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 512MiB)") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def _synthetic(args: argparse.Namespace) -> int:
    check_synthetic_sizes({"num_users": args.users, "pairs_per_user": args.pairs_per_user,
                           "dim": args.dim, "rank": args.rank, "num_prompts": args.prompts,
                           "max_shard_bytes": args.max_shard_size},
                          getattr(torch, args.dtype).itemsize, args.out,
                          names=SYNTHETIC_FLAGS, defaults=SYNTHETIC_DEFAULTS)
    start = time.perf_counter()
    write_synthetic(args.out, num_users=args.users, pairs_per_user=args.pairs_per_user,
                    dim=args.dim, rank=args.rank, label_noise=args.label_noise,
                    num_prompts=args.prompts, seed=args.seed, dtype=getattr(torch, args.dtype),
                    max_shard_bytes=args.max_shard_size)
    print(f"wrote {args.out}: {args.users} users x {args.pairs_per_user} pairs, d={args.dim}, "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _embedder(args: argparse.Namespace) -> Any:
    device = collectives.local_device(resolve_device(args.device))
    if args.encoder == "minilm":
        return SentenceEmbedder.minilm(device=device, batch_size=args.batch_size)
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    return RewardModelEmbedder.from_pretrained(
        args.model, dtype=getattr(torch, dtype), device=device, attention=args.attention,
        batch_size=args.batch_size, max_length=args.max_length or None,
        max_batch_tokens=args.max_batch_tokens, shared_prompts=not args.no_shared_prompts,
        legacy=args.legacy_batching)


def _embed(args: argparse.Namespace) -> int:
    if (args.source == "pairs") != (args.pairs is not None):
        raise DataError("--pairs FILE goes with --source pairs (and only with it)")
    if args.source == "pairs" and args.data_dir is not None:
        raise DataError("--data-dir goes with --source tldr|prism|personalllm")
    if args.source != "personalllm" and (args.normalize or args.cost_sign):
        raise DataError("--normalize and --cost-sign go with --source personalllm")
    if args.source != "tldr" and args.min_confidence is not None:
        raise DataError("--min-confidence goes with --source tldr")
    if args.max_batch_tokens < 1 or args.max_length < 0:
        raise DataError("--max-batch-tokens must be >= 1 and --max-length >= 0")
    resolve_device(args.device)  # a bad --device fails before the pairs are read
    if args.encoder == "reward-model" and importlib.util.find_spec("transformers") is None:
        raise DataError("embedding with a reward model needs transformers: "
                        "pip install 'lore-datasets[embed]'")
    jobs = _read_inputs(args)  # the data (and the network) before any model is loaded
    if collectives.world_size() <= 1:
        return _embed_with(args, jobs)
    # under torchrun: gloo only coordinates (shards go through the file system)
    collectives.join("cpu", args.dist_timeout, "lore-prepare", backend="gloo")
    try:
        return _embed_with(args, jobs)
    finally:
        collectives.leave()


def _read_inputs(args: argparse.Namespace) -> list[tuple[str, Any, Path, dict[str, Any]]]:
    """(kind, pairs or rows, output directory, source meta) for each part to embed."""
    out: Path = args.out
    read = {"limit": args.limit, "data_dir": args.data_dir}
    if args.source == "pairs":
        return [("pairs", read_pairs(args.pairs), out, {"pairs_file": str(args.pairs)})]
    if args.source == "tldr":
        jobs = []
        for split in ("train", "validation"):
            split_pairs, skipped = hub.tldr_pairs(_rows("tldr", split, read), split,
                                                  min_confidence=args.min_confidence)
            print(f"tldr {split}: {len(split_pairs)} pairs, dropped {skipped}", file=sys.stderr)
            jobs.append(("pairs", split_pairs, out / split,
                         {"hub": "openai/summarize_from_feedback", "split": split,
                          "min_confidence": args.min_confidence, "dropped": skipped}))
        return jobs
    if args.source == "prism":
        prism_pairs, skipped = hub.prism_pairs(_rows("prism", "train", read))
        print(f"prism: {len(prism_pairs)} pairs, counts {skipped}", file=sys.stderr)
        return [("pairs", prism_pairs, out,
                 {"hub": "HannahRoseKirk/prism-alignment", "counts": skipped})]
    return [("personalllm", _rows("personalllm", split, read), out, {"split": split})
            for split in ("train", "test")]


def _rows(source: str, split: str, read: dict[str, Any]) -> list[dict[str, Any]]:
    rows, files = source_rows(source, split, **read)
    print(f"{source} {split}: {len(rows)} rows from {files}", file=sys.stderr)
    return rows


def _embed_with(args: argparse.Namespace, jobs: list) -> int:
    embedder = _embedder(args)
    common = {"shard_size": args.shard_size, "progress": not args.no_progress}
    out: Path = args.out
    for kind, data, target, meta in jobs:
        if kind == "pairs":
            embed_pairs(data, embedder, target, source=meta, **common)
        else:
            embed_personalllm(data, embedder, target, meta["split"], **common)
    if args.source == "tldr" and (out / "train" / "v_ref.safetensors").is_file() and _first():
        shutil.copyfile(out / "train" / "v_ref.safetensors", out / "v_ref.safetensors")
    if args.source == "personalllm" and _first():
        write_score_settings(out, normalize=args.normalize or "none",
                             cost_sign=args.cost_sign or "raw")
    hint = (f"lore-train --dataset {out}" if args.source == "pairs"
            else f"lore-train --dataset {args.source} --data-dir {out}")
    if _first():
        stats = getattr(embedder, "stats", None)
        if stats is not None:
            print(f"embedded {stats.rows} rows: {stats.postfix()}, {stats.truncated_rows} rows "
                  f"cut to --max-length {args.max_length}", file=sys.stderr)
        print(f"wrote {out}; next: {hint}")
    return 0


def _first() -> bool:
    """Process 0 under torchrun, or the only process."""
    return not collectives.joined() or collectives.rank() == 0


def read_pairs(path: Path) -> list:
    """A JSONL of judgments -> TextPairs; a string prompt becomes one user message."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected JSONL text pairs)")
    out = []
    for line_no, obj in json_lines(path, skip_blank=True):
        missing = [k for k in ("user_id", "prompt", "chosen", "rejected")
                   if not isinstance(obj, dict) or obj.get(k) in (None, "")]
        if missing:
            raise DataError(f"{path}, line {line_no}: missing field(s) {missing}")
        prompt = obj["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not (isinstance(prompt, list)
                and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in prompt)):
            raise DataError(f"{path}, line {line_no}: prompt must be a string or a list of "
                            "{role, content} messages")
        prompt_id, split = obj.get("prompt_id"), obj.get("split")
        out.append(TextPair(str(obj["user_id"]), prompt, str(obj["chosen"]),
                            str(obj["rejected"]), None if prompt_id is None else str(prompt_id),
                            None if split is None else str(split)))
    if not out:
        raise DataError(f"{path}: no pairs")
    return out


if __name__ == "__main__":
    sys.exit(main())
