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
                 max_length: int | None = None, name: str | None = None) -> None:
        head = getattr(model, "score", None)
        if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
            raise DataError(f"{type(model).__name__}: expected a reward model with a one-output "
                            "'score' head (AutoModelForSequenceClassification, num_labels=1)")
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
    def model_rewards(self, conversations: Sequence[Sequence[Message]]) -> torch.Tensor:
        """The model's own reward (its full forward, one unpadded sequence at a time), fp32."""
        out = [self.model(**self._batch([self.render(c)])).logits[0, 0].float().cpu()
               for c in conversations]
        return torch.stack(out) if out else torch.empty(0)

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

    def tolerance(self, scale: torch.Tensor) -> torch.Tensor:
        """How far v_ref . h may be from the model's reward: a few ulps of its dtype."""
        eps = torch.finfo(self.model.score.weight.dtype).eps
        return 8 * eps * scale + 1e-6


def check_head(embedder: RewardModelEmbedder, chosen: Sequence[Sequence[Message]],
               rejected: Sequence[Sequence[Message]], h_chosen: torch.Tensor,
               h_rejected: torch.Tensor) -> dict[str, float]:
    """Check v_ref . (h_chosen - h_rejected) against the model's reward difference.

    Raises DataError when they disagree beyond the dtype's rounding, which
    means the embeddings are not what the head reads (wrong token, wrong
    layer, or a head that is not a plain linear map).
    """
    v = embedder.v_ref
    ours = (h_chosen.float() - h_rejected.float()) @ v
    theirs = embedder.model_rewards(chosen) - embedder.model_rewards(rejected)
    scale = (h_chosen.float().abs() + h_rejected.float().abs()) @ v.abs()
    err = (ours - theirs).abs()
    tol = embedder.tolerance(scale)
    if bool((err > tol).any()):
        i = int((err - tol).argmax())
        raise DataError(
            f"{embedder.name}: v_ref . (h_chosen - h_rejected) = {ours[i]:.6g} but the model's "
            f"reward difference is {theirs[i]:.6g} (pair {i}, tolerance {tol[i]:.3g}): the "
            "embeddings are not what the score head reads"
        )
    return {"pairs": len(chosen), "max_abs_err": float(err.max()) if len(err) else 0.0,
            "max_tolerance": float(tol.max()) if len(tol) else 0.0}
