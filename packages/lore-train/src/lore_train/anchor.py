"""The target of the cosine penalty: the reward model's head, or the population head.

The reference regularizes V only toward a reward-model head v_ref; on data
embedded without one (a sentence encoder) alpha was unusable. The population
Bradley-Terry head -- one direction shared by every user (K = 1), fitted on
the very same training pairs -- is the natural stand-in: pulling LoRe's
columns toward it shrinks the model toward the K = 1 baseline it must beat,
and alpha decides how far each column may stray to serve a user type.
"""

from __future__ import annotations

import torch

from lore_datasets import PreferencePairs

from .config import TrainConfig


def population_head(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    validation: PreferencePairs | None = None,
) -> torch.Tensor:
    """The K = 1 Bradley-Terry direction [d] fitted on ``pairs`` with ``config``'s
    optimizer settings, no penalty and no pruning (early-stopped on ``validation``
    when ``config.early_stopping``)."""
    from .trainer import fit  # the trainer imports this module, so not at the top

    head_config = config.with_(K=1, alpha=0.0, v_l2=0.0, prune_threshold=None)
    for seen_pairs, seen_val, seen_config, head in _recent:
        if seen_pairs is pairs and seen_val is validation and seen_config == head_config:
            return head  # a sweep over K and alpha needs the same head every time
    model, _ = fit(pairs, head_config, validation=validation, progress=False)
    head = model.V.detach()[:, 0]
    _recent.append((pairs, validation, head_config, head))
    del _recent[:-_RECENT]
    return head


# The last few population heads, matched by the *identity* of their pairs (kept
# alive here, so an id is never reused) and an equal config: a grid over K,
# alpha and v_l2 on one training set fits its head once, not once per cell.
_RECENT = 4
_recent: list[tuple[PreferencePairs, PreferencePairs | None, TrainConfig, torch.Tensor]] = []


def cosine_anchor(
    pairs: PreferencePairs,
    config: TrainConfig,
    v_ref: torch.Tensor | None,
    *,
    validation: PreferencePairs | None = None,
) -> tuple[torch.Tensor | None, str | None]:
    """(anchor vector, its name) for ``config``; (v_ref, None) when alpha is 0.

    ``config.anchor``: "v_ref" needs the data's head, "population" always fits
    the population head, "auto" prefers v_ref and falls back to the population.
    """
    if config.alpha == 0 or config.K < 1:
        return v_ref, None
    if config.anchor == "v_ref" or (config.anchor == "auto" and v_ref is not None):
        if v_ref is None:
            raise ValueError("anchor='v_ref' (alpha > 0) needs a reference head, this data has "
                             "none; use anchor='population' or 'auto'")
        return v_ref, "v_ref"
    head = population_head(pairs, config, validation=validation)
    return head.to(torch.device(config.device)), "population"
