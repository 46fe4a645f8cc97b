"""`lore-export hf` and `PersonalReward` on a tiny random Llama reward model (no download).

The contract: conversations embedded by the real `lore-prepare embed` path
(`embed_pairs`), a lore model fitted on them, exported; then the exported
model's K logits . s_u equal `PersonalRewardModel.score(phi, u)`, in fp32
and bf16, and `PersonalReward` gives the same rewards from text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from lore_train import PersonalReward, PersonalRewardModel
from lore_train.export_cli import main as export_main
from lore_train.hf_export import export_hf
from lore_train.tiny_export import build_tiny_export

EPS = {torch.float32: torch.finfo(torch.float32).eps, torch.bfloat16: 2.0**-8}


# a tiny model gains nothing from threads, and spinning ones stall a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def run(request, tmp_path_factory):
    dtype = request.param
    tiny = build_tiny_export(tmp_path_factory.mktemp(f"export-{str(dtype).split('.')[-1]}"),
                             dtype=dtype)
    return {"dtype": dtype, "backbone": tiny.backbone, "data": tiny.data,
            "checkpoint": tiny.checkpoint, "out": tiny.out}


def responses(data: Path) -> tuple[list[list[dict[str, str]]], torch.Tensor]:
    """Every embedded conversation and its embedding phi (fp32 rows of embeddings.npy)."""
    import numpy as np

    records = [json.loads(line) for line in (data / "responses.jsonl").read_text().splitlines()]
    convs = [[*r["prompt"], {"role": "assistant", "content": r["text"]}] for r in records]
    return convs, torch.from_numpy(np.load(data / "embeddings.npy"))


def tolerance(want: torch.Tensor, dtype: torch.dtype) -> float:
    """1e-4 of the rewards' scale in fp32; in bf16 a few roundings of bf16 logits."""
    return (1e-4 if dtype == torch.float32 else 4 * EPS[dtype]) * float(want.abs().max())


def test_export_loads_as_a_k_output_sequence_classifier(run) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    model = PersonalRewardModel.load(run["checkpoint"])
    config = AutoConfig.from_pretrained(run["out"])
    assert config.num_labels == model.kept_rank == 3
    assert config.id2label == {0: "basis_0", 1: "basis_1", 2: "basis_2"}
    hf = AutoModelForSequenceClassification.from_pretrained(run["out"], dtype=run["dtype"])
    assert tuple(hf.score.weight.shape) == (3, model.dim) and hf.score.bias is None
    assert torch.equal(hf.score.weight, model.V.detach().T.to(run["dtype"]))
    AutoTokenizer.from_pretrained(run["out"])  # the tokenizer came along
    tensors = load_file(run["out"] / "lore_users.safetensors")
    doc = json.loads((run["out"] / "lore_users.json").read_text())
    assert doc["user_ids"] == model.user_ids and doc["K"] == 3 and doc["tau"] == model.tau
    assert doc["embedder"]["pooling"] == "last_token" and doc["embedder"]["chat_template"]
    assert doc["embedder"]["dtype"] == str(run["dtype"]).removeprefix("torch.")
    torch.testing.assert_close(tensors["weights"], model.weights().detach())
    torch.testing.assert_close(tensors["prior_alpha"], model.population_prior())
    # v_ref is the backbone's own head: K = 0 stays reproducible
    original = AutoModelForSequenceClassification.from_pretrained(run["backbone"], dtype=torch.float32)
    torch.testing.assert_close(tensors["v_ref"], original.score.weight[0].detach())
    assert doc["posterior_users"] and tensors["precision"].shape == (len(doc["posterior_users"]), 3, 3)
    assert "PersonalReward.from_pretrained" in (run["out"] / "README.md").read_text()


def test_contract_logits_dot_weights_equal_the_lore_score(run) -> None:
    """HF forward of each conversation alone: K logits . s_u == model.score(phi, u)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dtype = run["dtype"]
    model = PersonalRewardModel.load(run["checkpoint"])
    hf = AutoModelForSequenceClassification.from_pretrained(run["out"], dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(run["out"])
    weights = load_file(run["out"] / "lore_users.safetensors")["weights"]
    convs, phi = responses(run["data"])
    with torch.no_grad():
        logits = torch.stack([
            hf(**tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False,
                     return_tensors="pt")).logits[0].float() for c in convs])
    assert logits.shape == (len(convs), 3)
    for i, user in enumerate(model.user_ids):
        want = model.score(phi, user)
        got = logits @ weights[i]
        err = (got - want).abs()
        assert float(err.max()) <= tolerance(want, dtype), (user, float(err.max()))
        other = model.score(phi, model.user_ids[i - 1])  # the test tells users apart
        assert float((other - want).abs().max()) > 10 * tolerance(want, dtype)


def test_personal_reward_from_text_equals_the_embedded_score(run) -> None:
    model = PersonalRewardModel.load(run["checkpoint"])
    pr = PersonalReward.from_pretrained(run["out"], max_batch_tokens=40)
    assert pr.K == 3 and pr.user_ids == model.user_ids
    convs, phi = responses(run["data"])
    prompts = [c[:-1] for c in convs]
    completions = [c[-1]["content"] for c in convs]
    basis = pr.basis_rewards(prompts, completions)
    assert basis.shape == (len(convs), 3) and basis.dtype == torch.float32
    for user in model.user_ids:
        want = model.score(phi, user)
        got = torch.tensor(pr.rewards(prompts, completions, [user] * len(convs)))
        # fp32 head on same-dtype hidden states; in bf16 the embedding pipeline ran each
        # prompt's prefix once (a KV cache) and the responses on top, so its hidden
        # states may differ from a whole-sequence forward by a bf16 rounding
        assert float((got - want).abs().max()) <= tolerance(want, run["dtype"]), user
        torch.testing.assert_close(pr.user_weights(user),
                                   model.weights()[model.user_index([user])][0].detach())
    # the TRL convention: conversational completions and plain-text prompts
    one = [convs[0][-1]]
    trl = pr(prompts=[prompts[0]], completions=[one], user_id=[model.user_ids[1]],
             completion_ids=[[1, 2]], trainer_state=None)
    assert trl == pytest.approx(pr.rewards([prompts[0]], [completions[0]], [model.user_ids[1]]))
    plain = pr([prompts[0][0]["content"]], [completions[0]], user_id=[model.user_ids[1]])
    assert plain == pytest.approx(trl)


def test_head_only_layout_loads_beside_the_backbone(run, tmp_path) -> None:
    out = export_hf(run["checkpoint"], str(run["backbone"]), tmp_path / "head")
    head = export_hf(run["checkpoint"], str(run["backbone"]), tmp_path / "head-only",
                     head_only=True)
    assert not (head / "model.safetensors").exists() and not (head / "config.json").exists()
    doc = json.loads((head / "lore_users.json").read_text())
    assert doc["layout"] == "head_only" and Path(doc["backbone"]) == run["backbone"].resolve()
    full, lean = PersonalReward.from_pretrained(out), PersonalReward.from_pretrained(head)
    convs, _ = responses(run["data"])
    prompts, completions = [c[:-1] for c in convs], [c[-1]["content"] for c in convs]
    torch.testing.assert_close(lean.basis_rewards(prompts, completions),
                               full.basis_rewards(prompts, completions))


def test_cli_writes_the_directory_and_refuses_to_overwrite(run, tmp_path, capsys) -> None:
    out = tmp_path / "cli-rm"
    args = ["hf", "--checkpoint", str(run["checkpoint"]), "--backbone", str(run["backbone"]),
            "--out", str(out)]
    assert export_main(args) == 0
    assert (out / "lore_users.json").is_file() and (out / "config.json").is_file()
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert export_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lore-export: error:") and "--overwrite" in err and "\n" not in err
    assert export_main([*args, "--overwrite", "--head-only"]) == 0
    assert sorted(p.name for p in out.iterdir()) != before  # replaced whole
    assert not (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cli-rm"]  # no staging left behind


def test_the_model_cards_plain_transformers_recipe_gives_the_same_reward(run) -> None:
    """The README card's 'Without lore' snippet, run as written, agrees with PersonalReward."""
    card = (run["out"] / "README.md").read_text()
    snippet = card.split("Without lore:")[1].split("```python\n")[1].split("```")[0]
    pr = PersonalReward.from_pretrained(run["out"])
    scope = {"DIR": str(run["out"]), "prompt": "the cat sat", "response": "a good dog",
             "user": pr.user_ids[2]}
    with torch.no_grad():
        exec(snippet, scope)
    want = pr.rewards(["the cat sat"], ["a good dog"], [pr.user_ids[2]])[0]
    tol = 1e-4 if run["dtype"] == torch.float32 else 4 * EPS[run["dtype"]]
    assert float(scope["reward"]) == pytest.approx(want, rel=tol, abs=tol)
