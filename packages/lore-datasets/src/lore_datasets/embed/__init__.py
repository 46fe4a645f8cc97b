"""Text pairs -> embeddings with a reward model (or a small sentence encoder).

    from lore_datasets.embed import RewardModelEmbedder, TextPair, embed_pairs
    embedder = RewardModelEmbedder.from_pretrained("Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
                                                   device="cuda")
    embed_pairs(pairs, embedder, "out/tldr")   # then: lore-train --dataset out/tldr

``transformers`` is imported only when a model is loaded (extra ``embed``).
"""

from .pipeline import TextPair, embed_pairs, embed_personalllm, embed_resumable
from .reward_model import RewardModelEmbedder, check_head
from .sentence import SentenceEmbedder

__all__ = [
    "RewardModelEmbedder",
    "SentenceEmbedder",
    "TextPair",
    "check_head",
    "embed_pairs",
    "embed_personalllm",
    "embed_resumable",
]
