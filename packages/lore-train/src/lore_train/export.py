"""A user's reward head in the layout of a Hugging Face reward model's score head.

A Hugging Face ``AutoModelForSequenceClassification`` reward model
(num_labels=1) computes ``hidden @ score.weight.T``; when a lore model's
embeddings are that backbone's last-token final hidden states, the user's
head V softmax(W_u) loaded into ``score.weight`` scores responses exactly as
`PersonalRewardModel.score` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lore_datasets.runtime.outputs import atomic_write, atomic_write_text

USAGE = (
    "reward(x, y) = h(x, y) . score.weight[0], h = the backbone's final hidden state "
    "of the last token (the input of its score head). Load it with "
    "model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1); "
    "model.score.weight.data.copy_(safetensors.torch.load_file("
    "'reward_head.safetensors')['score.weight']). Valid only if this model's "
    "embeddings were that backbone's hidden states. P(y1 preferred to y2) = "
    "sigmoid(tau * (reward(x, y1) - reward(x, y2))), or with label_noise eps > 0 "
    "eps + (1 - 2 eps) times that sigmoid (the ranking is the same)."
)


def write_reward_head(
    head: torch.Tensor,
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    description: dict[str, Any],
) -> Path:
    """Write ``head`` [d] as ``score.weight`` [1, d] in ``reward_head.safetensors``,
    and ``reward_head.json`` (``description`` plus the tensor's layout and usage)."""
    directory = Path(directory)
    dim = int(head.shape[0])
    tensors = {"score.weight": head[None].to(dtype).cpu().contiguous()}
    atomic_write(directory / "reward_head.safetensors", lambda tmp: save_file(tensors, tmp))
    config = {
        "format": "lore-reward-head",
        "format_version": 1,
        **description,
        "dim": dim,
        "tensor": {"name": "score.weight", "shape": [1, dim],
                   "dtype": str(dtype).removeprefix("torch.")},
        "bias": None,
        "usage": USAGE,
    }
    atomic_write_text(directory / "reward_head.json", json.dumps(config, indent=1))
    return directory
