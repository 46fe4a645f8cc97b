"""Shared checks for the reference pipelines' files (TL;DR, PRISM, PersonalLLM).

Each helper turns a missing or malformed input into one ``DataError`` line
naming the file and what was expected, so the loaders stay about splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import DataError

V_REF_FILE = "v_ref.safetensors"


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected {what})")
    return path


def read_safetensors(path: Path, key: str, what: str) -> torch.Tensor:
    """One tensor from a safetensors file (a format that cannot run code)."""
    require_file(path, what)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err}); expected {what}") from None
    if key not in tensors:
        raise DataError(f"{path}: no tensor {key!r} (found {sorted(tensors)}); expected {what}")
    return tensors[key]


def read_v_ref(data_dir: Path, dim: int) -> torch.Tensor | None:
    """``v_ref.safetensors`` (key ``v_ref``, the RM's score head) if present, else None."""
    path = data_dir / V_REF_FILE
    if not path.exists():
        return None
    v_ref = read_safetensors(path, "v_ref", f"the reward head as a [{dim}] tensor 'v_ref'")
    v_ref = v_ref.reshape(-1) if v_ref.ndim == 2 and 1 in v_ref.shape else v_ref
    if tuple(v_ref.shape) != (dim,) or not v_ref.is_floating_point():
        raise DataError(
            f"{path}: 'v_ref' has shape {tuple(v_ref.shape)} {v_ref.dtype}; expected a float "
            f"[{dim}] vector matching the embeddings"
        )
    return v_ref.float()


def vector(value: Any, where: str) -> torch.Tensor:
    """One embedding: a 1-D float tensor, or the reference's 1-element list of one."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[0] == 1:
        value = value[0]
    if not isinstance(value, torch.Tensor) or value.ndim != 1 or not value.is_floating_point():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise DataError(f"{where}: expected one float embedding vector [d], got {shape}")
    return value


def stack_vectors(vectors: Sequence[torch.Tensor], dim: int | None, where: str) -> torch.Tensor:
    """Stack 1-D vectors into an fp32 matrix, checking they share one width."""
    if not vectors:
        return torch.empty(0, dim or 0)
    widths = {v.shape[0] for v in vectors}
    if dim is not None:
        widths.add(dim)
    if len(widths) != 1:
        raise DataError(f"{where}: embeddings of different widths {sorted(widths)}")
    return torch.stack([v.float() for v in vectors])


def difference(chosen: Sequence[torch.Tensor], rejected: Sequence[torch.Tensor],
               dim: int | None, where: str) -> torch.Tensor:
    """chosen - rejected in fp32 (the reference subtracts in bf16, then casts)."""
    return stack_vectors(chosen, dim, where) - stack_vectors(rejected, dim, where)


def text_id(text: Any) -> str:
    """A short stable id for a prompt text (hash-seed independent)."""
    return hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:16]


def check_dict(obj: Any, path: Path, what: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected {what}, got a {type(obj).__name__}")
    if not obj:
        raise DataError(f"{path}: empty; expected {what}")
    return obj
