"""Shared CLI plumbing: device choice and turning library errors into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from lore_datasets import DataError
from lore_train import UnknownUserError


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name}: this torch has no usable CUDA device")
    return name


def run_cli(prog: str, main: Callable[[], int]) -> int:
    """Run ``main``; expected failures (bad data, bad files) print one line, exit 2."""
    try:
        return main()
    except (DataError, FileNotFoundError, UnknownUserError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
