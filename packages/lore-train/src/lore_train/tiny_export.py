"""A tiny personalized reward model export, built offline (tests, examples, servers).

Why it ships: everything downstream of ``lore-export hf`` (PersonalReward, a
reward server, an RLHF loop) needs a real export to run against, and none
may download a model. This builds one by the real paths end to end: the
tiny random Llama reward model of `lore_datasets.embed.tiny`, text pairs of
8 users embedded by `embed_pairs`, a few fitting steps, one user adapted
(so a posterior is stored), `save_cell`, then `export_hf`. Needs
``transformers`` and ``tokenizers``; a few seconds on one CPU core.

    from lore_train.tiny_export import build_tiny_export
    tiny = build_tiny_export("work/")          # tiny.out: the export directory
    pr = PersonalReward.from_pretrained(tiny.out)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lore_datasets import load_dataset
from lore_datasets.embed import RewardModelEmbedder, TextPair, embed_pairs
from lore_datasets.embed.tiny import save_tiny_reward_model, tiny_text

from .config import TrainConfig
from .experiment import save_cell
from .hf_export import export_hf
from .trainer import fit

USERS = tuple(f"u{i}" for i in range(8))


@dataclass(frozen=True)
class TinyExport:
    """Where each piece went: the export and what it was made from."""

    out: Path          # the lore-export hf directory
    backbone: Path     # the tiny reward model (HF directory)
    data: Path         # the lore-prepare embed output
    checkpoint: Path   # the lore checkpoint


def tiny_text_pairs() -> list:
    """8 users x 6 judgments over 6 prompts; chosen and rejected always differ."""
    pairs = []
    for u, user in enumerate(USERS):
        for j in range(6):
            prompt = [{"role": "user", "content": tiny_text(j, 4)}]
            a, b = tiny_text(j + u + 1, 3 + j % 4), tiny_text(2 * j + u, 7)
            chosen, rejected = (a, b) if (u + j) % 3 else (b, a)
            pairs.append(TextPair(user, prompt, chosen, rejected, prompt_id=f"p{j}"))
    return pairs


def build_tiny_export(root: str | Path, *, dtype: torch.dtype = torch.float32, K: int = 3,
                      head_only: bool = False, seed: int = 0, max_length: int | None = None,
                      **model_size: int) -> TinyExport:
    """Build everything under ``root`` (rm/, data/, run/, personal-rm/) and return the paths.

    The users' logits are spread (3 N(0, 1), seeded) after the short fit, as
    confident users' are, so users' rewards differ clearly. ``model_size``
    (``hidden_size``, ``num_layers``, ``max_positions`` of `tiny_reward_model`)
    makes a larger backbone, e.g. for a benchmark whose forward must cost
    something. ``max_length``: the embedder's token cut (from the left),
    recorded in the recipe. K = 0 is the backbone's own head (every user the same).
    """
    root = Path(root)
    backbone = save_tiny_reward_model(root / "rm", seed=seed, dtype=dtype, **model_size)
    embedder = RewardModelEmbedder.from_pretrained(str(backbone), dtype=dtype, batch_size=4,
                                                   max_length=max_length)
    data = embed_pairs(tiny_text_pairs(), embedder, root / "data", progress=False)
    bench = load_dataset(str(data), split={"min_pairs_per_user": 4, "unseen_user_fraction": 0.25,
                                           "seed": seed})
    config = TrainConfig(K=K, steps=40, fewshot_steps=60, seed=seed)
    model, _ = fit(bench.seen_train, config, v_ref=bench.v_ref, progress=False)
    if K >= 2:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed + 1)
            model.W.copy_(3 * torch.randn(model.W.shape, generator=gen))
        unseen = bench.unseen_fewshot
        first = unseen.user_ids[0]
        model.adapt(first, unseen.select_users([first]), prior="population")
    checkpoint = root / "run" / save_cell(model, bench.meta, root / "run", K, 0.0)
    out = export_hf(checkpoint, str(backbone), root / "personal-rm", head_only=head_only)
    return TinyExport(out=out, backbone=backbone, data=data, checkpoint=checkpoint)
