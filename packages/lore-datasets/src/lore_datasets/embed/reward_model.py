"""Reward-model embeddings: the final hidden state of a conversation's last token.

phi(x, y) is what a sequence-classification reward model's score head reads:
the post-norm hidden state at the last non-padding token of the chat-templated
conversation [user: x, assistant: y]. ``v_ref`` is that head's weight
(``score.weight``), so v_ref . phi is the model's own reward. (The reference
took the last ``nn.Linear`` of ``AutoModel``, an MLP projection: REFERENCE.md §2.)

One code path renders every conversation (chosen and rejected alike): the
tokenizer's chat template as text, then tokenization without added special
tokens (the template carries its own BOS; adding another is §7.13's double
BOS). The last real token is found from the attention mask, and position ids
follow the mask so left padding does not shift positions. Rows longer than
``max_length`` (4096 by default; None for no cut) lose tokens from the
*left*, so the response's end, which the head reads, is always kept; they are
counted in ``stats.truncated_rows``.

Batching (see ``batching`` and ``prefixes``): rows are taken in a global
length order and packed into forward passes of at most ``max_batch_tokens``
padded tokens and 1 % padding; with ``shared_prompts`` each prompt's common
token prefix runs once (left-padded, ``use_cache``) and its responses run on
a copy of that key/value cache (right-padded, positions continuing after the
prefix, the attention mask covering prefix + response). A CUDA out-of-memory
error halves the budget and retries. ``legacy=True`` keeps the original
pipeline: ``batch_size`` rows per pass, sorted within each call, every row
whole.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import time
from array import array
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import DataError
from .batching import BudgetRunner, EmbedStats
from .prefixes import Group, groups, length_order

Message = dict[str, str]


DEFAULT_MAX_LENGTH = 4096
DEFAULT_BATCH_TOKENS = 32768
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")
MAX_PADDING = 0.01


def attention_implementation(choice: str, device: str) -> str:
    """The attention kernel to load: ``auto`` is flash-attention on CUDA when installed, else sdpa."""
    if choice not in ATTENTION:
        raise DataError(f"attention must be one of {', '.join(ATTENTION)}, got {choice!r}")
    have_flash = importlib.util.find_spec("flash_attn") is not None
    if choice == "auto":
        return "flash_attention_2" if have_flash and str(device).startswith("cuda") else "sdpa"
    if choice == "flash_attention_2" and not have_flash:
        raise DataError("--attention flash_attention_2 needs the flash-attn package "
                        "(pip install flash-attn); use sdpa")
    return choice


class RewardModelEmbedder:
    """Embed conversations with a Hugging Face ``*ForSequenceClassification`` reward model.

    Two ways to batch: ``legacy=True`` is the original pipeline (``batch_size``
    rows at a time, sorted within each call, every row computed whole); the
    default batches by a token budget (``max_batch_tokens`` padded tokens per
    forward pass) and, with ``shared_prompts``, computes each prompt's common
    token prefix once and its responses on top of the cached keys and values.
    ``stats`` accumulates tokens, padding, time and savings over calls.
    """

    kind = "reward_model"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8,
                 max_length: int | None = DEFAULT_MAX_LENGTH, name: str | None = None,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS, shared_prompts: bool = True,
                 max_padding: float = MAX_PADDING, legacy: bool = False,
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
        if max_length is not None and max_length < 2:
            raise DataError(f"max_length must be >= 2 or None, got {max_length}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.legacy = legacy
        self.max_padding = max_padding
        self.runner = BudgetRunner(max_batch_tokens, on_oom=_empty_cuda_cache)
        self.stats = EmbedStats()
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self._base = getattr(model, model.base_model_prefix)
        params = inspect.signature(self._base.forward).parameters
        self._takes_positions = "position_ids" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # sharing needs a decoder that returns and takes a key/value cache
        self.shared_prompts = (shared_prompts and not legacy and "use_cache" in params
                               and self._cache_arg in params)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, dtype: torch.dtype = torch.bfloat16,
                        device: str = "cpu", attention: str = "auto",
                        **kwargs: Any) -> RewardModelEmbedder:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        attn = attention_implementation(attention, device)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if tokenizer.pad_token is None:  # any id will do: padding is found from the mask
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, dtype=dtype, attn_implementation=attn)
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

    @property
    def settings(self) -> dict[str, Any]:
        """What changes the tokens or their order (part of a resumable run's identity)."""
        return {"max_length": self.max_length, "shared_prompts": self.shared_prompts,
                "legacy": self.legacy}

    def _render(self, conversation: Sequence[Message]) -> tuple[list[int], bool]:
        text = self.tokenizer.apply_chat_template(list(conversation), tokenize=False,
                                                  add_generation_prompt=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = self.max_length is not None and len(ids) > self.max_length
        if cut:
            ids = ids[-self.max_length:]
        if not ids:
            raise DataError(f"conversation renders to no tokens: {conversation!r:.200}")
        return ids, cut

    def render(self, conversation: Sequence[Message]) -> list[int]:
        """Token ids of one conversation: the same path for chosen and rejected."""
        return self._render(conversation)[0]

    def tokenize(self, conversations: Sequence[Sequence[Message]]
                 ) -> tuple[list[array], list[str]]:
        """Token ids (int32 arrays: a whole data set's tokens are held at once) and prompt keys
        (the conversation without its last message) of each row; rows cut to ``max_length``
        are counted in ``stats.truncated_rows``."""
        tokens, keys = [], []
        for conv in conversations:
            ids, cut = self._render(conv)
            self.stats.truncated_rows += cut
            tokens.append(array("i", ids))
            prompt = json.dumps(list(conv)[:-1], sort_keys=True, ensure_ascii=False)
            keys.append(hashlib.sha1(prompt.encode()).hexdigest())  # short: one per row is kept
        return tokens, keys

    def order(self, tokens: Sequence[Sequence[int]], keys: Sequence[str]) -> list[int]:
        """The global processing order: by length, a prompt's rows together (identity if legacy)."""
        if self.legacy:
            return list(range(len(tokens)))
        return length_order(tokens, keys if self.shared_prompts else None)

    def _batch(self, token_lists: Sequence[Sequence[int]], side: str | None = None
               ) -> dict[str, torch.Tensor]:
        longest = max(map(len, token_lists))
        ids = torch.full((len(token_lists), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        left = (side or getattr(self.tokenizer, "padding_side", "right")) == "left"
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
        """[n, d] fp32 embeddings in input order."""
        tokens, keys = self.tokenize(conversations)
        return self.embed_tokens(tokens, keys, progress=progress, desc=desc)

    def embed_tokens(self, tokens: Sequence[Sequence[int]], keys: Sequence[str] | None = None, *,
                     progress: bool = False, desc: str = "embedding") -> torch.Tensor:
        """[n, d] fp32 embeddings of token lists (rows with equal ``keys`` share a prompt)."""
        out = torch.empty(len(tokens), self.dim)
        bar = tqdm(total=len(tokens), desc=desc, disable=not progress, unit="seq")
        stats = EmbedStats(rows=len(tokens), plain_tokens=sum(map(len, tokens)))

        def done(rows: list[int], hidden: torch.Tensor) -> None:
            out[rows] = hidden.float().cpu()
            bar.update(len(rows))
            bar.set_postfix_str(stats.postfix(), refresh=False)

        start = time.perf_counter()
        try:
            if self.legacy:
                self._legacy(tokens, stats, done)
            else:
                self._budgeted(tokens, keys if self.shared_prompts else None, stats, done)
        finally:
            stats.seconds = time.perf_counter() - start
            stats.oom_backoffs = self.runner.backoffs - self.stats.oom_backoffs
            self.stats.add(stats)
            bar.close()
        return out

    # -- the original pipeline: a row count per batch -------------------------
    def _legacy(self, tokens, stats: EmbedStats, done) -> None:
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            rows = [tokens[i] for i in idx]
            hidden = self.hidden(self._batch(rows))
            _count(stats, [len(r) for r in rows], max(map(len, rows)) * len(rows))
            done(idx, hidden)

    # -- a token budget, shared prompt prefixes computed once -----------------
    def _budgeted(self, tokens, keys, stats: EmbedStats, done) -> None:
        found = groups(tokens, keys)
        plain = sorted((g.rows[i] for g in found if not g.shared for i in range(len(g.rows))),
                       key=lambda r: (len(tokens[r]), r))
        shared = sorted((g for g in found if g.shared), key=lambda g: (g.length, g.rows[0]))

        def run_plain(rows: list[int]) -> None:
            lists = [tokens[r] for r in rows]
            hidden = self.hidden(self._batch(lists))
            _count(stats, [len(t) for t in lists], max(map(len, lists)) * len(lists))
            done(rows, hidden)

        def run_shared(batch: list[Group]) -> None:
            for rows, hidden in self._shared(batch, stats):
                done(rows, hidden)

        self.runner.run(plain, lambda rows: len(rows) * max(len(tokens[r]) for r in rows),
                        run_plain, real=lambda rows: sum(len(tokens[r]) for r in rows),
                        max_padding=self.max_padding)
        self.runner.run(shared, _group_cost, run_shared, real=_group_tokens,
                        max_padding=self.max_padding)

    @torch.inference_mode()
    def _shared(self, batch: list[Group], stats: EmbedStats):
        """Prefixes of ``batch`` in one pass (left-padded), then the responses on their cache."""
        prefix = self._batch([g.prefix for g in batch], side="left")
        mask = prefix["attention_mask"]
        extra = {"position_ids": (mask.cumsum(1) - 1).clamp(min=0)} if self._takes_positions else {}
        result = self._base(**prefix, **extra, use_cache=True)
        layers = _cache_tensors(getattr(result, self._cache_arg, None)
                                or getattr(result, "past_key_values", None))
        lengths = mask.sum(1)
        _count(stats, [len(g.prefix) for g in batch], mask.numel())
        items = sorted(((len(s), gi, row, s) for gi, g in enumerate(batch)
                        for row, s in zip(g.rows, g.suffixes)), key=lambda x: x[:3])
        # each response batch copies its prefixes' cache: keep that copy within the budget
        cap = max(1, self.runner.budget // mask.shape[1])
        runs = [run[i:i + cap] for run in _low_padding_runs(items, self.max_padding)
                for i in range(0, len(run), cap)]
        for sub in runs:
            owner = torch.tensor([gi for _, gi, _, _ in sub], device=mask.device)
            suffix = self._batch([s for *_, s in sub], side="right")
            smask = suffix["attention_mask"]
            kwargs: dict[str, Any] = {
                "input_ids": suffix["input_ids"],
                "attention_mask": torch.cat([mask[owner], smask], dim=1),
                self._cache_arg: _select_cache(layers, owner),
                "use_cache": True,
            }
            if self._takes_positions:
                kwargs["position_ids"] = lengths[owner, None] + torch.arange(
                    smask.shape[1], device=mask.device)
            states = self._base(**kwargs).last_hidden_state
            last = smask.sum(1) - 1
            _count(stats, [n for n, *_ in sub], smask.numel())
            yield [row for _, _, row, _ in sub], states[torch.arange(len(sub)), last]

    @property
    def eps(self) -> float:
        return torch.finfo(self.model.score.weight.dtype).eps


def _count(stats: EmbedStats, real: list[int], computed: int) -> None:
    stats.tokens += sum(real)
    stats.padded += computed - sum(real)
    stats.batches += 1


def _group_cost(batch: Sequence[Group]) -> int:
    """Padded prefix tokens plus the responses' tokens."""
    prefix = len(batch) * max(len(g.prefix) for g in batch)
    return prefix + sum(len(s) for g in batch for s in g.suffixes)


def _group_tokens(batch: Sequence[Group]) -> int:
    return sum(len(g.prefix) + sum(map(len, g.suffixes)) for g in batch)


def _low_padding_runs(items: list, tolerance: float) -> list[list]:
    """Consecutive runs of length-sorted items whose padding stays within ``tolerance``
    of the tokens computed."""
    runs: list[list] = []
    current: list = []
    total = 0
    for item in items:
        n = item[0]
        if current and n * (len(current) + 1) - (total + n) > tolerance * n * (len(current) + 1):
            runs.append(current)
            current, total = [], 0
        current.append(item)
        total += n
    if current:
        runs.append(current)
    return runs


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [B, heads, T, head_dim] of a transformers cache."""
    if cache is None:
        raise DataError("the model returned no key/value cache; run with --no-shared-prompts")
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v, *_ in cache]


def _select_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor) -> Any:
    """A fresh dynamic cache holding ``rows`` of each layer (a prefix repeated per response)."""
    from transformers import DynamicCache

    return DynamicCache([(k[rows], v[rows]) for k, v in layers])


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
