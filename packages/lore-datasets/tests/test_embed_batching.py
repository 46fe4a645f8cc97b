"""Token-budget batches, the out-of-memory back-off, shared prompt prefixes and the length order."""

from __future__ import annotations

import pytest
import torch

from lore_datasets.embed.batching import BudgetRunner, EmbedStats, pack
from lore_datasets.embed.prefixes import common_prefix, groups, length_order
from lore_datasets.errors import DataError


class FakeOOM(RuntimeError):
    pass


def test_pack_keeps_the_budget_and_the_padding_cap() -> None:
    lengths = [3, 3, 4, 10, 10, 11, 30]
    cost = lambda b: len(b) * max(lengths[i] for i in b)  # noqa: E731
    real = lambda b: sum(lengths[i] for i in b)  # noqa: E731
    batches = pack(range(7), cost, 20)
    assert [i for b in batches for i in b] == list(range(7))
    assert all(cost(b) <= 20 or len(b) == 1 for b in batches)
    assert batches[-1] == [6]  # alone over the budget: a batch of its own
    capped = pack(range(7), cost, 1000, real=real, max_padding=0.2)
    assert capped == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(cost(b) - real(b) <= 0.2 * cost(b) for b in capped)


def test_oom_halves_the_budget_and_retries_the_same_units() -> None:
    """A wrapper raises a fake OOM for batches over 8 tokens; every unit still runs once,
    in order, and the budget stays halved for the rest."""
    seen: list[int] = []
    calls: list[list[int]] = []

    def step(batch: list[int]) -> None:
        calls.append(batch)
        if len(batch) * 2 > 8:
            raise FakeOOM("CUDA out of memory (fake)")
        seen.extend(batch)

    runner = BudgetRunner(32, is_oom=lambda e: isinstance(e, FakeOOM))
    runner.run(list(range(20)), lambda b: 2 * len(b), step)
    assert seen == list(range(20))
    assert runner.budget == 8 and runner.backoffs == 2
    assert calls[0] == list(range(16))  # the first try used the whole budget

    def other(batch: list[int]) -> None:
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        BudgetRunner(32, is_oom=lambda e: isinstance(e, FakeOOM)).run([1, 2], len, other)

    def never_fits(batch: list[int]) -> None:
        raise FakeOOM("out of memory")

    with pytest.raises(DataError, match="out of memory on a batch of 1 unit"):
        BudgetRunner(4, is_oom=lambda e: isinstance(e, FakeOOM)).run([1, 2], len, never_fits)


def test_common_token_prefix_is_per_group_and_leaves_the_last_token() -> None:
    # same prompt text, but the template merged the boundary differently in row 2
    rows = [[1, 5, 6, 7, 20, 21], [1, 5, 6, 7, 30], [1, 5, 6, 9, 40], [2, 8]]
    keys = ["p", "p", "p", "q"]
    found = groups(rows, keys)
    assert [g.rows for g in found] == [[0, 1, 2], [3]]
    assert found[0].prefix == [1, 5, 6] and found[0].suffixes[2] == [9, 40]
    assert not found[1].shared
    assert common_prefix([[1, 2], [1, 2]]) == 1  # identical rows still keep one token each
    assert common_prefix([[1, 2, 3]]) == 0
    order = length_order(rows, keys)
    assert order == [3, 1, 0, 2] or order[:1] == [3]
    assert sorted(order[1:]) == [0, 1, 2]  # a prompt's rows stay together
    assert length_order(rows, None) == [3, 1, 2, 0]


def test_stats_fractions() -> None:
    s = EmbedStats(rows=2, tokens=90, padded=10, plain_tokens=180, seconds=2.0)
    assert s.padding_fraction == 0.1 and s.saved_fraction == 0.5 and s.tokens_per_second == 50
    t = EmbedStats(rows=1, tokens=10)
    t.add(s)
    assert t.tokens == 100 and t.rows == 3
    assert "tok/s" in s.postfix()


transformers = pytest.importorskip("transformers")


# a tiny model gains nothing from threads, and spinning ones stall a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _conversations() -> list[list[dict[str, str]]]:
    from lore_datasets.embed.tiny import tiny_text

    out = []
    for p in range(7):
        prompt = [{"role": "user", "content": tiny_text(p, 12 + 3 * p)}]
        if p == 3:  # a two-turn prompt: the shared prefix spans earlier turns
            prompt = [*prompt, {"role": "assistant", "content": "good"},
                      {"role": "user", "content": tiny_text(p + 1, 5)}]
        for r in range(1 + p % 4):
            out.append([*prompt, {"role": "assistant", "content": tiny_text(5 * p + r, 2 + 2 * r)}])
    return out


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("budget", [48, 4096])
def test_shared_prompts_equal_the_plain_embedding(dtype: torch.dtype, tol: float,
                                                  budget: int) -> None:
    from lore_datasets.embed import RewardModelEmbedder
    from lore_datasets.embed.tiny import tiny_reward_model, tiny_tokenizer

    model = tiny_reward_model(dtype=dtype, max_positions=256)
    convs = _conversations()
    plain = RewardModelEmbedder(model, tiny_tokenizer("right"), legacy=True, batch_size=1)
    want = plain.embed(convs, progress=False)
    fast = RewardModelEmbedder(model, tiny_tokenizer("left"), max_batch_tokens=budget)
    got = fast.embed(convs, progress=False)
    scale = want.abs().max()
    torch.testing.assert_close(got, want, rtol=0, atol=float(tol * scale))
    stats = fast.stats
    assert stats.saved_fraction > 0.3 and stats.padding_fraction <= 0.01
    assert stats.tokens + round(stats.saved_fraction * stats.plain_tokens) == stats.plain_tokens
    # the budget path without sharing computes every token, with the same result
    flat = RewardModelEmbedder(model, tiny_tokenizer("left"), max_batch_tokens=budget,
                               shared_prompts=False)
    torch.testing.assert_close(flat.embed(convs, progress=False), want, rtol=0,
                               atol=float(tol * scale))
    assert flat.stats.saved_fraction == 0.0


def test_truncated_rows_are_counted_and_keep_their_end() -> None:
    from lore_datasets.embed import RewardModelEmbedder
    from lore_datasets.embed.tiny import tiny_reward_model, tiny_tokenizer

    model = tiny_reward_model(max_positions=256)
    convs = _conversations()
    emb = RewardModelEmbedder(model, tiny_tokenizer(), max_length=16)
    got = emb.embed(convs, progress=False)
    full = RewardModelEmbedder(model, tiny_tokenizer(), max_length=None)
    lengths = [len(t) for t in full.tokenize(convs)[0]]
    assert emb.stats.truncated_rows == sum(n > 16 for n in lengths) > 0
    alone = RewardModelEmbedder(model, tiny_tokenizer(), max_length=16, legacy=True)
    torch.testing.assert_close(got, alone.embed(convs, progress=False), rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="max_length must be >= 2"):
        RewardModelEmbedder(model, tiny_tokenizer(), max_length=1)


def test_embedder_backs_off_on_a_fake_cuda_oom() -> None:
    """A wrapper around the backbone raises CUDA's OOM error for passes over 40 tokens:
    the embedder halves its budget until batches fit and the result is unchanged."""
    from lore_datasets.embed import RewardModelEmbedder
    from lore_datasets.embed.tiny import tiny_reward_model, tiny_tokenizer

    model = tiny_reward_model(max_positions=256)
    convs = _conversations()
    want = RewardModelEmbedder(model, tiny_tokenizer(), legacy=True).embed(convs, progress=False)
    emb = RewardModelEmbedder(model, tiny_tokenizer(), max_batch_tokens=1024)
    forward = emb._base.forward
    sizes: list[int] = []

    def small_memory(*args, **kwargs):
        ids = kwargs["input_ids"]
        sizes.append(ids.numel())
        if ids.numel() > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return forward(*args, **kwargs)

    emb._base.forward = small_memory
    got = emb.embed(convs, progress=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    backoffs = emb.runner.backoffs
    assert emb.stats.oom_backoffs == backoffs >= 1 and emb.runner.budget == 1024 >> backoffs
    assert max(sizes) > 40  # it did try the big batches first


def test_attention_choice(monkeypatch) -> None:
    import importlib.util

    from lore_datasets.embed.reward_model import attention_implementation

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flash_attn" else real(name, *a))
    assert attention_implementation("auto", "cuda:0") == "sdpa"
    assert attention_implementation("eager", "cpu") == "eager"
    with pytest.raises(DataError, match="needs the flash-attn package"):
        attention_implementation("flash_attention_2", "cuda")
    with pytest.raises(DataError, match="attention must be one of"):
        attention_implementation("flash", "cuda")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    assert attention_implementation("auto", "cuda:1") == "flash_attention_2"
    assert attention_implementation("auto", "cpu") == "sdpa"
