"""``lore-prepare``: embed raw text pairs, or convert reference files to the canonical form.

    lore-prepare embed --source tldr --model Skywork/Skywork-Reward-Llama-3.1-8B-v0.2 --out data/tldr
    lore-prepare embed --source pairs --pairs my_pairs.jsonl --encoder minilm --out data/mine
    lore-prepare convert --dataset prism --data-dir data/prism_ref --out data/prism_canonical

Only argument parsing and printing live here; the work is in the library.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ..cli_common import resolve_device, run_cli
from ..errors import DataError

DEFAULT_MODEL = "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"
DTYPES = ("bfloat16", "float16", "float32")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lore-prepare", description="Embed text pairs with a reward model (or MiniLM), or "
                                "convert reference files to the canonical form.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed", help="text pairs -> embeddings in a layout lore-train reads",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--source", required=True, choices=("tldr", "prism", "personalllm", "pairs"),
                   help="a hub data set (needs network and `datasets`) or a local JSONL of pairs")
    e.add_argument("--pairs", type=Path, help="JSONL, one object per line: user_id, prompt "
                   "(text or chat messages), chosen, rejected[, prompt_id, split]")
    e.add_argument("--out", type=Path, required=True, help="output directory (rerun to resume)")
    e.add_argument("--model", default=DEFAULT_MODEL, help="HF sequence-classification reward model")
    e.add_argument("--encoder", choices=("reward-model", "minilm"), default="reward-model",
                   help="minilm: all-MiniLM-L6-v2 sentence encoder on CPU (no v_ref)")
    e.add_argument("--dtype", choices=DTYPES, default=None,
                   help="model dtype (None: bfloat16 on GPU, float32 on CPU)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-length", type=int, default=None,
                   help="keep at most this many tokens, cut from the left (None: no cut)")
    e.add_argument("--shard-size", type=int, default=512, help="rows per resumable shard")
    e.add_argument("--limit", type=int, default=None, help="first N hub rows per split (testing)")
    e.add_argument("--no-progress", action="store_true")
    c = sub.add_parser("convert", help="reference files -> canonical safetensors + JSON")
    c.add_argument("--dataset", required=True, choices=("tldr", "prism", "personalllm"))
    c.add_argument("--data-dir", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("lore-prepare", lambda: _convert(args) if args.command == "convert" else _embed(args))


def _convert(args: argparse.Namespace) -> int:
    from ..convert import convert

    bench = convert(args.dataset, args.data_dir, args.out, seed=args.seed)
    print(f"wrote {args.out}/benchmark.safetensors + benchmark.json: "
          + ", ".join(f"{k} {v}" for k, v in bench.meta.get("counts", {}).items()))
    return 0


def _embedder(args: argparse.Namespace) -> Any:
    import torch

    device = resolve_device(args.device)
    if args.encoder == "minilm":
        from .sentence import SentenceEmbedder

        return SentenceEmbedder.minilm(device=device, batch_size=args.batch_size)
    from .reward_model import RewardModelEmbedder

    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    return RewardModelEmbedder.from_pretrained(
        args.model, dtype=getattr(torch, dtype), device=device, batch_size=args.batch_size,
        max_length=args.max_length)


def _embed(args: argparse.Namespace) -> int:
    from .. import hub
    from .pipeline import embed_pairs, embed_personalllm

    if (args.source == "pairs") != (args.pairs is not None):
        raise DataError("--pairs FILE goes with --source pairs (and only with it)")
    pairs = read_pairs(args.pairs) if args.pairs is not None else None
    embedder = _embedder(args)
    common = {"shard_size": args.shard_size, "progress": not args.no_progress}
    out: Path = args.out
    if args.source == "pairs":
        embed_pairs(pairs, embedder, out, **common)
        hint = f"lore-train --dataset {out}"
    elif args.source == "tldr":
        for split in ("train", "validation"):
            split_pairs, skipped = hub.tldr_pairs(hub.load_hub_rows("tldr", split, limit=args.limit),
                                                  split)
            print(f"tldr {split}: {len(split_pairs)} pairs, skipped {skipped}", file=sys.stderr)
            embed_pairs(split_pairs, embedder, out / split, **common)
        if (out / "train" / "v_ref.safetensors").is_file():
            shutil.copyfile(out / "train" / "v_ref.safetensors", out / "v_ref.safetensors")
        hint = f"lore-train --dataset tldr --data-dir {out}"
    elif args.source == "prism":
        prism_pairs, skipped = hub.prism_pairs(hub.load_hub_rows("prism", "train", limit=args.limit))
        print(f"prism: {len(prism_pairs)} pairs, skipped {skipped}", file=sys.stderr)
        embed_pairs(prism_pairs, embedder, out, **common)
        hint = f"lore-train --dataset prism --data-dir {out}"
    else:
        for split in ("train", "test"):
            embed_personalllm(hub.load_hub_rows("personalllm", split, limit=args.limit),
                              embedder, out, split, **common)
        hint = f"lore-train --dataset personalllm --data-dir {out}"
    print(f"wrote {out}; next: {hint}")
    return 0


def read_pairs(path: Path) -> list:
    """A JSONL of judgments -> TextPairs; a string prompt becomes one user message."""
    from .pipeline import TextPair

    if not path.is_file():
        raise DataError(f"{path}: file not found (expected JSONL text pairs)")
    out = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {line_no}: invalid JSON ({err.msg})") from None
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
