"""The target of the cosine penalty: the reward model's head, or the population head.

The reference regularizes V only toward a reward-model head v_ref; on data
embedded without one (a sentence encoder) alpha was unusable. The population
Bradley-Terry head -- one direction shared by every user (K = 1), fitted on
the very same training pairs -- is the natural stand-in: pulling LoRe's
columns toward it shrinks the model toward the K = 1 baseline it must beat,
and alpha decides how far each column may stray to serve a user type.
"""

from __future__ import annotations

from typing import Literal

from .config import TrainConfig

AnchorKind = Literal["v_ref", "population"]


def anchor_kind(config: TrainConfig, *, has_v_ref: bool) -> AnchorKind | None:
    """What ``config``'s cosine penalty pulls toward (None: no pull, alpha is 0).

    ``config.anchor``: "v_ref" needs the data's head, "population" always
    uses the population head (the trainer fits it: `trainer.population_head`),
    "auto" prefers v_ref and falls back to the population.
    """
    if config.alpha == 0 or config.K < 1:
        return None
    if config.anchor == "v_ref" or (config.anchor == "auto" and has_v_ref):
        if not has_v_ref:
            raise ValueError("anchor='v_ref' (alpha > 0) needs a reference head, this data has "
                             "none; use anchor='population' or 'auto'")
        return "v_ref"
    return "population"


def population_config(config: TrainConfig) -> TrainConfig:
    """The population head's fit: ``config`` at K = 1 without penalties or pruning."""
    return config.with_(K=1, alpha=0.0, v_l2=0.0, prune_threshold=None)
