"""`lore-export hf` refuses what it cannot export: each a one-line error, nothing written.

And a checkpoint made from sentence-encoder embeddings, refused as an HF
reward model, still gives rewards from text through `PersonalReward.from_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from lore_datasets import DataError, load_dataset
from lore_datasets.embed import SentenceEmbedder, embed_pairs
from lore_datasets.embed.tiny import (
    save_tiny_reward_model,
    tiny_reward_model,
    tiny_tokenizer,
)
from lore_train import PersonalReward, PersonalRewardModel, TrainConfig, fit
from lore_train.experiment import save_cell
from lore_train.export_cli import main as export_main
from lore_train.hf_export import export_hf
from lore_train.tiny_export import build_tiny_export, tiny_text_pairs

# a tiny model gains nothing from threads, and spinning ones stall a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_export(tmp_path_factory.mktemp("bad"))


def refused(tmp_path: Path, checkpoint: Path, backbone: Path | str, match: str, capsys,
            *extra: str, error: type[Exception] = DataError) -> None:
    """The library raises ``error`` matching ``match``; the CLI exits 2 with one line;
    neither leaves anything behind."""
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        export_hf(checkpoint, str(backbone), out, head_only="--head-only" in extra)
    capsys.readouterr()
    code = export_main(["hf", "--checkpoint", str(checkpoint), "--backbone", str(backbone),
                        "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lore-export: error:") and err.count("\n") == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_non_empty_out_is_refused_without_overwrite_and_left_alone(tiny, tmp_path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty; pass --overwrite"):
        export_hf(tiny.checkpoint, str(tiny.backbone), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (export_hf(tiny.checkpoint, str(tiny.backbone), empty) / "lore_users.json").is_file()


@pytest.mark.parametrize("layout", [(), ("--head-only",)], ids=["full", "head-only"])
def test_a_backbone_of_another_hidden_size(tiny, tmp_path, capsys, layout) -> None:
    wide = save_tiny_reward_model(tmp_path / "wide-rm", hidden_size=32)
    refused(tmp_path, tiny.checkpoint, wide, "hidden size 32, but the checkpoint's embeddings "
            "have d = 16", capsys, *layout)


@pytest.mark.parametrize("layout", [(), ("--head-only",)], ids=["full", "head-only"])
def test_a_backbone_without_a_score_layer(tiny, tmp_path, capsys, layout) -> None:
    import transformers

    lm_dir = tmp_path / "causal-lm"
    config = tiny_reward_model().config
    transformers.LlamaForCausalLM(config).save_pretrained(lm_dir)
    tiny_tokenizer().save_pretrained(lm_dir)
    refused(tmp_path, tiny.checkpoint, lm_dir, "has no trained 'score' layer", capsys, *layout)


def test_another_reward_model_of_the_same_size(tiny, tmp_path, capsys) -> None:
    other = save_tiny_reward_model(tmp_path / "other-rm", seed=7)
    refused(tmp_path, tiny.checkpoint, other, "differs from the checkpoint's v_ref", capsys)


def test_a_checkpoint_that_does_not_say_how_its_embeddings_were_made(tiny, tmp_path,
                                                                     capsys) -> None:
    model = PersonalRewardModel.load(tiny.checkpoint)
    model.meta = {"dataset": "synthetic", "embedder": None}
    bare = model.save(tmp_path / "bare")
    refused(tmp_path, bare, tiny.backbone, "does not record how its embeddings were made",
            capsys)
    # ... which --embeddings (the lore-prepare embed output) supplies
    out = export_hf(bare, str(tiny.backbone), tmp_path / "ok", embeddings=tiny.data)
    assert PersonalReward.from_pretrained(out).K == 3


def test_a_missing_checkpoint_is_one_line(tiny, tmp_path, capsys) -> None:
    refused(tmp_path, tmp_path / "nowhere", tiny.backbone, "no such checkpoint", capsys,
            error=FileNotFoundError)


def test_sentence_encoder_checkpoint_refused_but_personal_reward_works(tmp_path, capsys) -> None:
    """Mean-pooled sentence embeddings have no score layer to hold V: the export is
    refused with the reason; PersonalReward.from_checkpoint scores text with the encoder."""
    encoder = SentenceEmbedder(tiny_reward_model().model, tiny_tokenizer(), name="tiny-mean",
                               batch_size=5)
    data = embed_pairs(tiny_text_pairs(), encoder, tmp_path / "data", progress=False)
    bench = load_dataset(str(data), split={"min_pairs_per_user": 4})
    model, _ = fit(bench.seen_train, TrainConfig(K=2, steps=20), progress=False)
    checkpoint = tmp_path / "run" / save_cell(model, bench.meta, tmp_path / "run", 2, 0.0)
    backbone = save_tiny_reward_model(tmp_path / "rm")
    refused(tmp_path, checkpoint, backbone, "sentence-encoder embeddings", capsys)

    pr = PersonalReward.from_checkpoint(checkpoint, encoder)
    import json

    records = [json.loads(x) for x in (data / "responses.jsonl").read_text().splitlines()]
    phi = torch.from_numpy(np.load(data / "embeddings.npy"))
    prompts, texts = [r["prompt"] for r in records], [r["text"] for r in records]
    user = model.user_ids[0]
    got = torch.tensor(pr.rewards(prompts, texts, [user] * len(texts)))
    want = model.score(phi, user)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
    wrong = SentenceEmbedder(tiny_reward_model().model, tiny_tokenizer(), name="another")
    with pytest.raises(DataError, match="made by model 'tiny-mean'"):
        PersonalReward.from_checkpoint(checkpoint, wrong)


def test_cli_usage_errors_are_one_line(tiny, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        export_main(["hf", "--checkpoint", str(tiny.checkpoint)])  # no --backbone, --out
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("lore-export hf: error:") and err.count("\n") == 1
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code = export_main(["hf", "--checkpoint", str(tiny.checkpoint), "--backbone",
                        str(tiny.backbone), "--out", str(a_file)])
    err = capsys.readouterr().err
    assert code == 2 and "exists and is not a directory" in err and err.count("\n") == 1
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("damage, match", [
    ("missing", r"lore_users.json: missing"),
    ("not-json", r"lore_users.json: not JSON"),
    ("one-user-less", r"lore_users.safetensors: weights is \(\d+, 3\), lore_users.json says \(\d+, 3\)"),
    ("other-format", r"lore_users.json: not a lore-personal-reward file"),
])
def test_a_damaged_users_file_is_refused_naming_it(tiny, tmp_path, damage, match) -> None:
    import json
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny.out, out)
    path = out / "lore_users.json"
    doc = json.loads(path.read_text())
    if damage == "missing":
        path.unlink()
    elif damage == "not-json":
        path.write_text("{ not json")
    elif damage == "one-user-less":
        doc["user_ids"] = doc["user_ids"][:-1]
        path.write_text(json.dumps(doc))
    else:
        doc["format"] = "something-else"
        path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=match):
        PersonalReward.from_pretrained(out)
