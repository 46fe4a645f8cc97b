"""Reward-model embeddings: the final hidden state of a conversation's last token.

phi(x, y) is what a sequence-classification reward model's score head reads:
the post-norm hidden state at the last non-padding token of the chat-templated
conversation [user: x, assistant: y]. ``v_ref`` is that head's weight
(``score.weight``), so v_ref . phi is the model's own reward. (The reference
took the last ``nn.Linear`` of ``AutoModel``, an MLP projection: REFERENCE.md §2.)

One code path renders every conversation (chosen and rejected alike): the
tokenizer's chat template as text, then tokenization without added special
tokens (the template carries its own BOS; adding another is §7.13's double
BOS). Batches are padded on the tokenizer's side, left or right; the last
real token is found from the attention mask, and position ids follow the
mask so left padding does not shift positions. Nothing is truncated unless
``max_length`` is set; then tokens are cut from the *left*, so the response's
end, which the head reads, is always kept.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import DataError

Message = dict[str, str]


class RewardModelEmbedder:
    """Embed conversations with a Hugging Face ``*ForSequenceClassification`` reward model."""

    kind = "reward_model"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8,
                 max_length: int | None = None, name: str | None = None,
                 outputs: int | None = 1) -> None:
        # outputs=None: any number of score outputs (lore's exported K-output models
        # read the same hidden state; `lore_train.PersonalReward` uses this class so
        # that text is rendered and pooled by this one code path).
        head = getattr(model, "score", None)
        if not isinstance(head, torch.nn.Linear) or (outputs is not None
                                                     and head.out_features != outputs):
            raise DataError(f"{type(model).__name__}: expected a reward model with a "
                            f"{outputs or 'K'}-output 'score' head "
                            "(AutoModelForSequenceClassification, "
                            f"num_labels={outputs or 'K'})")
        if tokenizer.pad_token_id is None:
            raise DataError("the tokenizer has no pad token; set tokenizer.pad_token first")
        if getattr(tokenizer, "chat_template", None) is None:
            raise DataError("the tokenizer has no chat template")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self._base = getattr(model, model.base_model_prefix)
        self._takes_positions = "position_ids" in inspect.signature(self._base.forward).parameters

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, dtype: torch.dtype = torch.bfloat16,
                        device: str = "cpu", **kwargs: Any) -> RewardModelEmbedder:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if tokenizer.pad_token is None:  # any id will do: padding is found from the mask
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, dtype=dtype)
        return cls(model.to(device), tokenizer, name=name_or_path, **kwargs)

    @property
    def dim(self) -> int:
        return self.model.score.in_features

    @property
    def recipe(self) -> dict[str, Any]:
        """How phi was made, for whoever must remake it from text (`lore-export hf`)."""
        return {"kind": self.kind, "model": self.name, "chat_template": True,
                "add_generation_prompt": False, "add_special_tokens": False,
                "pooling": "last_token", "position_ids": "from_attention_mask",
                "max_length": self.max_length, "truncation_side": "left",
                "dtype": str(self.model.score.weight.dtype).removeprefix("torch.")}

    @property
    def v_ref(self) -> torch.Tensor:
        """The reward head as an fp32 [d] vector."""
        return self.model.score.weight.detach()[0].float().cpu()

    def render(self, conversation: Sequence[Message]) -> list[int]:
        """Token ids of one conversation: the same path for chosen and rejected."""
        text = self.tokenizer.apply_chat_template(list(conversation), tokenize=False,
                                                  add_generation_prompt=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[-self.max_length:]
        if not ids:
            raise DataError(f"conversation renders to no tokens: {conversation!r:.200}")
        return ids

    def _batch(self, token_lists: list[list[int]]) -> dict[str, torch.Tensor]:
        longest = max(map(len, token_lists))
        ids = torch.full((len(token_lists), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, tokens in enumerate(token_lists):
            span = slice(longest - len(tokens), longest) if left else slice(0, len(tokens))
            ids[i, span] = torch.tensor(tokens)
            mask[i, span] = 1
        device = self.model.score.weight.device
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    def encode(self, token_lists: list[list[int]]) -> torch.Tensor:
        """[B, d] last-token hidden states (model dtype, model device) of rendered token lists."""
        return self.hidden(self._batch(token_lists))

    @torch.inference_mode()
    def hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, d] final hidden state at each row's last non-padding token (model dtype)."""
        mask = batch["attention_mask"]
        extra = {}
        if self._takes_positions:
            extra["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        states = self._base(**batch, **extra).last_hidden_state
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (positions * mask).argmax(1)
        return states[torch.arange(states.shape[0], device=states.device), last]

    @torch.inference_mode()
    def single(self, conversation: Sequence[Message]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [d], the model's own reward) of one unpadded sequence, both fp32."""
        batch = self._batch([self.render(conversation)])
        hidden = self.hidden(batch)[0].float().cpu()
        return hidden, self.model(**batch).logits[0, 0].float().cpu()

    def embed(self, conversations: Sequence[Sequence[Message]], *, progress: bool = True,
              desc: str = "embedding") -> torch.Tensor:
        """[n, d] fp32 embeddings, batched by similar length, in input order."""
        tokens = [self.render(c) for c in conversations]
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
        out = torch.empty(len(tokens), self.dim)
        bar = tqdm(total=len(tokens), desc=desc, disable=not progress, unit="seq")
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            out[idx] = self.hidden(self._batch([tokens[i] for i in idx])).float().cpu()
            bar.update(len(idx))
        bar.close()
        return out

    @property
    def eps(self) -> float:
        return torch.finfo(self.model.score.weight.dtype).eps


def check_head(embedder: RewardModelEmbedder, chosen: Sequence[Sequence[Message]],
               rejected: Sequence[Sequence[Message]], h_chosen: torch.Tensor,
               h_rejected: torch.Tensor) -> dict[str, float]:
    """Check that v_ref . (h_chosen - h_rejected) is the model's own reward difference.

    Two parts, so that each tolerance follows from the dtype: (1) on each
    conversation run alone, v_ref . h equals the model's reward up to the
    rounding of one output in the model dtype (a wrong vector or token is far
    off); (2) the given, batch-computed embeddings equal those unpadded ones
    up to rounding that grows with depth (a padding or pooling mistake moves
    them much more). Raises DataError naming the pair that fails.
    """
    v, eps = embedder.v_ref, embedder.eps
    convs = [*chosen, *rejected]
    given = torch.cat([h_chosen, h_rejected]).float()
    alone = [embedder.single(c) for c in convs]
    h = torch.stack([a for a, _ in alone]) if alone else torch.empty(0, v.numel())
    rewards = torch.stack([r for _, r in alone]) if alone else torch.empty(0)
    k = len(chosen)

    head_err = (h @ v - rewards).abs()
    head_tol = eps * rewards.abs() + 1e-6 * (h.abs() @ v.abs()) + 1e-6
    bad = torch.nonzero(head_err > head_tol).flatten()
    if bad.numel():
        i = int(bad[0])
        raise DataError(
            f"{embedder.name}: v_ref . h = {float(h[i] @ v):.6g} but the model's reward is "
            f"{float(rewards[i]):.6g} ({'chosen' if i < k else 'rejected'} of pair {i % k}): "
            "the embeddings are not what the score head reads"
        )
    drift = (given - h).norm(dim=1) / h.norm(dim=1).clamp(min=1e-12)
    # Rounding differences between a padded batch and a lone run grow like a
    # random walk over the layers; measured on random Llamas: about 1 eps
    # (bf16, fp16) to 3 eps (fp32) at 4 layers.
    layers = getattr(embedder.model.config, "num_hidden_layers", 1)
    drift_tol = 8 * eps * (1 + layers) ** 0.5
    bad = torch.nonzero(drift > drift_tol).flatten()
    if bad.numel():
        i = int(bad[0])
        raise DataError(
            f"{embedder.name}: the embedding of the {'chosen' if i < k else 'rejected'} response "
            f"of pair {i % k} differs from the same conversation run alone by {float(drift[i]):.3g} "
            f"(relative; tolerance {drift_tol:.3g}): the embeddings are not what the score head "
            "reads (padding or last-token selection)"
        )
    pair_err = ((given[:k] - given[k:]) @ v - (rewards[:k] - rewards[k:])).abs()
    return {
        "pairs": k,
        "head_max_abs_err": float(head_err.max()) if k else 0.0,
        "embedding_max_rel_drift": float(drift.max()) if k else 0.0,
        "embedding_drift_tolerance": drift_tol,
        "reward_diff_max_abs_err": float(pair_err.max()) if k else 0.0,
    }
