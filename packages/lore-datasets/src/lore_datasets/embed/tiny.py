"""A tiny random Llama-style reward model and tokenizer, built from a config.

Why it ships: tests, benchmarks and examples need a real Hugging Face
``*ForSequenceClassification`` model (chat template, padding, last-token
pooling, a ``score`` head) but must never download one. The vocabulary is a
fixed list of words; any other word maps to ``<unk>``, so arbitrary text
still tokenizes. Needs the ``embed`` extra (transformers, tokenizers).

    from lore_datasets.embed.tiny import save_tiny_reward_model
    save_tiny_reward_model("tiny-rm")        # then: lore-prepare embed --model tiny-rm ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world", "good", "bad",
         "summary", "post", "is", "not", "very", "short", "long"]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant"]
# Role, content, end of turn; the template brings its own BOS (no second one is added).
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] | trim }} "
            "{{ eos_token }} {% endfor %}")


def tiny_text(k: int, n: int = 6) -> str:
    """A deterministic n-word text from the vocabulary (the k-th of its kind)."""
    return " ".join(WORDS[(k * 7 + i * 3) % len(WORDS)] for i in range(n))


def tiny_tokenizer(padding_side: str = "right") -> Any:
    """A word-level fast tokenizer over `WORDS` with a chat template and a pad token."""
    import tokenizers
    import transformers

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", padding_side=padding_side)
    hf.chat_template = TEMPLATE
    return hf


def tiny_reward_model(seed: int = 0, dtype: torch.dtype = torch.float32, *,
                      hidden_size: int = 16, num_layers: int = 2, num_labels: int = 1,
                      max_positions: int = 128) -> Any:
    """A randomly initialised (seeded) ``LlamaForSequenceClassification`` in eval mode."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=len(WORDS) + len(SPECIAL), hidden_size=hidden_size,
        intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=2, num_key_value_heads=1, num_labels=num_labels, pad_token_id=0,
        max_position_embeddings=max_positions)
    torch.manual_seed(seed)
    return transformers.LlamaForSequenceClassification(config).eval().to(dtype)


def save_tiny_reward_model(directory: str | Path, *, seed: int = 0,
                           padding_side: str = "left", **kwargs: Any) -> Path:
    """Write the tiny model and its tokenizer to ``directory`` (``from_pretrained`` loads it)."""
    directory = Path(directory)
    tiny_reward_model(seed, **kwargs).save_pretrained(directory)
    tiny_tokenizer(padding_side).save_pretrained(directory)
    return directory
