"""``lore-export``: a lore checkpoint as a Hugging Face reward model with K outputs.

    lore-export hf --checkpoint runs/x/checkpoints/K3_alpha0 --backbone Skywork/... --out personal-rm
    lore-export hf --checkpoint ... --backbone /models/rm --out rm-head --head-only

Only argument parsing and printing live here; the work is in `lore_train.hf_export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lore_datasets.runtime.cli import ArgumentParser, console_entry, run_cli

from .hf_export import export_hf
from .model import UnknownUserError


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lore-export", description="Export a lore checkpoint for other stacks.")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hf", help="a directory AutoModelForSequenceClassification loads: the "
                       "backbone with score = V^T (K outputs) plus every user's weights",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    h.add_argument("--checkpoint", type=Path, required=True,
                   help="a lore checkpoint directory (RUN/checkpoints/K3_alpha0)")
    h.add_argument("--backbone", required=True,
                   help="the reward model whose hidden states the embeddings were (name or dir)")
    h.add_argument("--out", type=Path, required=True, help="the directory to write")
    h.add_argument("--head-only", action="store_true",
                   help="write only the head and users files; they name the backbone (no copy)")
    h.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="weights dtype (default: the dtype the embeddings were made in)")
    h.add_argument("--embeddings", type=Path, default=None,
                   help="the lore-prepare embed output, when the checkpoint does not record "
                   "how its embeddings were made")
    h.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        _quiet_transformers()  # its loading/saving bars would break the one-line errors

        out = export_hf(args.checkpoint, args.backbone, args.out, head_only=args.head_only,
                        overwrite=args.overwrite, dtype=args.dtype, embeddings=args.embeddings)
        print(f"wrote {out} ({'head only' if args.head_only else 'backbone + K-output head'}); "
              f"load it with lore_train.PersonalReward.from_pretrained({str(out)!r})")
        return 0

    return run_cli("lore-export", run, expected=(UnknownUserError,))


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging
    except ImportError:
        return
    logging.disable_progress_bar()


def entry() -> int:
    """The `lore-export` console script."""
    return console_entry(main)


if __name__ == "__main__":
    sys.exit(main())
