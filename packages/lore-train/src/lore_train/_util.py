"""Small helpers the fitting modules share: seeded generators and progress bars."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: draws are the same whatever device the fit runs on."""
    return torch.Generator(device="cpu").manual_seed(seed)


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A transient bar, off when ``enabled`` is false (None: off when not a terminal)."""
    return tqdm(total=total, desc=desc, disable=not enabled or None, leave=False, dynamic_ncols=True)
