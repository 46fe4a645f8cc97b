"""A lore checkpoint as a Hugging Face reward model with K outputs (``lore-export hf``).

The low-rank form fits the standard artifact: the backbone's score layer
becomes V^T (``score.weight`` [K, d], ``num_labels = K``), so any stack that
serves an ``AutoModelForSequenceClassification`` returns a response's K basis
rewards in its normal forward pass; a user's reward is their dot product with
the user's weights s_u = softmax(W_u). One forward serves every user.

The directory (``full`` layout)::

    config.json, model.safetensors, tokenizer files   the backbone, score = V^T
    lore_users.safetensors   weights [N, K] (s_u), logits [N, K], precision [P, K, K],
                             prior_alpha [K], basis [K, d] (fp32 V^T), v_ref [d] (the
                             backbone's own score head, when it had one output)
    lore_users.json          user ids, K, tau, label noise, temperature, few-shot
                             settings, the embedder recipe, the backbone
    README.md                how to call it

The ``head_only`` layout has the last three only and names the backbone in
lore_users.json (no copy of its weights); `lore_train.PersonalReward` loads
both. The directory appears whole or not at all: it is built in a temporary
sibling and renamed into place.

The export only makes sense when phi were the backbone's last-token final
hidden states (``lore-prepare embed`` with a reward model); the checkpoint's
``embedder_recipe`` (from the embeddings' sidecar) says so, and a checkpoint
made from sentence-encoder embeddings is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lore_datasets import DataError
from lore_datasets.runtime.outputs import check_output_dir, is_empty_dir, publish

from .model import PersonalRewardModel
from .users_file import LAYOUTS, write_users

DTYPES = ("float32", "bfloat16", "float16")


def export_hf(checkpoint: str | Path, backbone: str, out: str | Path, *, head_only: bool = False,
              overwrite: bool = False, dtype: str | None = None,
              embeddings: str | Path | None = None) -> Path:
    """Write ``checkpoint`` with ``backbone`` as a K-output reward model directory ``out``.

    ``embeddings``: a ``lore-prepare embed`` output directory to take the
    embedder recipe from when the checkpoint does not record it. ``dtype``
    defaults to the dtype the embeddings were made in. Returns ``out``.
    """
    out = Path(out)
    check_output_dir(out)
    if out.exists() and not is_empty_dir(out) and not overwrite:
        raise DataError(f"--out {out}: not empty; pass --overwrite to replace it")
    model = PersonalRewardModel.load(checkpoint)
    recipe = embedder_recipe(model, Path(checkpoint), embeddings)
    dtype = dtype or recipe.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise DataError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, dtype)
    basis = model.V.detach().T.contiguous()  # [K, d] fp32
    config = _backbone_config(backbone)
    hidden = getattr(config, "hidden_size", None)
    if hidden != model.dim:
        raise DataError(f"--backbone {backbone}: hidden size {hidden}, but the checkpoint's "
                        f"embeddings have d = {model.dim}: not the model that made them")
    head_only_backbone = _local_or_name(backbone)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent
                                    if out.parent.exists() else _mkparent(out)))
    try:
        if head_only:
            v_ref = _backbone_score_weight(backbone)
        else:
            hf_model, v_ref = _load_backbone(backbone, torch_dtype)
            install_basis_head(hf_model, basis)
            tokenizer = load_tokenizer(backbone)
            if hf_model.config.pad_token_id is None:  # batches need it in HF's own forward
                hf_model.config.pad_token_id = tokenizer.pad_token_id
            tokenizer.save_pretrained(staging)
            hf_model.save_pretrained(staging)
        _check_v_ref(model, v_ref, backbone)
        write_users(staging, model, basis, v_ref, recipe=recipe, layout=LAYOUTS[head_only],
                    backbone=head_only_backbone, dtype=dtype, checkpoint=str(checkpoint))
        (staging / "README.md").write_text(model_card(model, recipe, LAYOUTS[head_only],
                                                      head_only_backbone), encoding="utf-8")
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# -- what phi were -------------------------------------------------------------
def embedder_recipe(model: PersonalRewardModel, checkpoint: Path,
                    embeddings: str | Path | None = None) -> dict[str, Any]:
    """How the checkpoint's embeddings were made; refuse anything but a reward model's
    last-token hidden states (the only phi a score layer can reproduce)."""
    recipe = model.meta.get("embedder_recipe")
    if embeddings is not None:
        recipe = _sidecar_recipe(Path(embeddings) / "embeddings.json")
        if recipe is None:
            raise DataError(f"--embeddings {embeddings}: no embeddings.json with a recipe "
                            "(an output directory of lore-prepare embed)")
    if recipe is None and isinstance(model.meta.get("dataset"), str):
        recipe = _sidecar_recipe(Path(model.meta["dataset"]) / "embeddings.json")
    name = str(model.meta.get("embedder") or "")
    if (recipe or {}).get("kind") == "sentence_encoder" or "minilm" in name.lower():
        raise DataError(f"{checkpoint}: trained on sentence-encoder embeddings ({name or 'MiniLM'}), "
                        "not a reward model's hidden states: there is no score layer to put V in "
                        "(use lore_train.PersonalReward.from_checkpoint with that encoder instead)")
    if recipe is None:
        raise DataError(f"{checkpoint}: does not record how its embeddings were made (embedder "
                        f"{name or 'unknown'}); pass --embeddings DIR, the lore-prepare embed output")
    if recipe.get("kind") != "reward_model" or recipe.get("pooling") != "last_token":
        raise DataError(f"{checkpoint}: embedder recipe {recipe!r} is not a reward model's "
                        "last-token hidden state")
    return dict(recipe)


def _sidecar_recipe(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not JSON ({err})") from None
    recipe = doc.get("recipe") if isinstance(doc, dict) else None
    return recipe if isinstance(recipe, dict) else None


# -- the backbone ----------------------------------------------------------------
def _backbone_config(backbone: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(backbone)
    except (OSError, ValueError) as err:
        raise DataError(f"--backbone {backbone}: not a Hugging Face model ({_first_line(err)})") \
            from None


def load_tokenizer(backbone: str | Path) -> Any:
    """The backbone's tokenizer, with a pad token (any id will do: pooling reads the mask)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(f"{backbone}: the tokenizer has no chat template (the embeddings were "
                        "made from chat-templated conversations)")
    return tokenizer


def _load_backbone(backbone: str, dtype: torch.dtype) -> tuple[Any, torch.Tensor | None]:
    """The backbone as a sequence classifier, and its original one-output head (v_ref)."""
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            backbone, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise DataError(f"--backbone {backbone}: cannot be loaded as a sequence classifier "
                        f"({_first_line(err)})") from None
    head = getattr(model, "score", None)
    if not isinstance(head, torch.nn.Linear) or any(k.endswith("score.weight")
                                                     for k in info.get("missing_keys", ())):
        raise DataError(f"--backbone {backbone}: has no trained 'score' layer (not a reward model "
                        "of the *ForSequenceClassification kind)")
    v_ref = head.weight.detach()[0].float().clone() if head.out_features == 1 else None
    return model.eval(), v_ref


def _backbone_score_weight(backbone: str) -> torch.Tensor | None:
    """v_ref from the backbone's files without loading it (head-only export); the model
    is loaded only when its files are not local safetensors."""
    directory = Path(backbone)
    files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if not files:
        return _load_backbone(backbone, torch.float32)[1]
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())  # a safe_open handle, not a dict
            key = next((k for k in names if k == "score.weight" or k.endswith(".score.weight")),
                       None)
            if key is not None:
                weight = f.get_tensor(key)
                return weight[0].float().clone() if weight.shape[0] == 1 else None
    raise DataError(f"--backbone {backbone}: has no trained 'score' layer (not a reward model "
                    "of the *ForSequenceClassification kind)")


def install_basis_head(model: Any, basis: torch.Tensor) -> Any:
    """Replace ``model.score`` with a bias-free K-output layer holding ``basis`` [K, d]."""
    K, d = basis.shape
    old = model.score
    if old.in_features != d:
        raise DataError(f"the backbone's score layer reads {old.in_features} features, the basis {d}")
    head = torch.nn.Linear(d, K, bias=False, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        head.weight.copy_(basis.to(head.weight))
    model.score = head
    model.config.num_labels = K
    model.config.id2label = {i: f"basis_{i}" for i in range(K)}
    model.config.label2id = {f"basis_{i}": i for i in range(K)}
    model.config.problem_type = "regression"
    return model


def _check_v_ref(model: PersonalRewardModel, v_ref: torch.Tensor | None, backbone: str) -> None:
    """The backbone's head must be the v_ref the embeddings were made with, if both exist."""
    if v_ref is None or model.v_ref is None:
        return
    err = float((v_ref - model.v_ref.cpu()).norm() / model.v_ref.norm().clamp(min=1e-12))
    if err > 1e-2:
        raise DataError(f"--backbone {backbone}: its score head differs from the checkpoint's v_ref "
                        f"by {err:.3g} (relative): not the model that made the embeddings")


# -- writing the directory --------------------------------------------------------
def _mkparent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _local_or_name(backbone: str) -> str:
    """A local backbone as an absolute path (the head-only layout must find it from anywhere)."""
    path = Path(backbone)
    return str(path.resolve()) if path.exists() else backbone


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def model_card(model: PersonalRewardModel, recipe: dict[str, Any], layout: str,
               backbone: str) -> str:
    """README.md of an export: what the K outputs are and how to call it."""
    K = model.kept_rank
    load = ("import json\n"
            "from safetensors.torch import load_file\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            "model = AutoModelForSequenceClassification.from_pretrained(DIR)   # num_labels = K\n"
            "tokenizer = AutoTokenizer.from_pretrained(DIR)\n"
            "users = json.load(open(f'{DIR}/lore_users.json'))['user_ids']\n"
            "weights = load_file(f'{DIR}/lore_users.safetensors')['weights']   # [N, K]\n"
            "conversation = [{'role': 'user', 'content': prompt},\n"
            "                {'role': 'assistant', 'content': response}]\n"
            "text = tokenizer.apply_chat_template(conversation, tokenize=False)\n"
            "ids = tokenizer(text, add_special_tokens=False, return_tensors='pt')\n"
            "basis = model(**ids).logits[0].float()                          # [K]\n"
            "reward = basis @ weights[users.index(user)]\n") if layout == "full" else (
            f"# head-only layout: the backbone is {backbone}; PersonalReward loads both\n")
    return f"""# A personalized reward model (lore, K = {K})

Exported by `lore-export hf` from a lore (LoRe) checkpoint: a shared low-rank
reward basis V [d, K] and per-user weights s_u = softmax(W_u).
{"The backbone's score layer is V^T: the model has K = " + str(K) + " outputs, the basis rewards."
 if layout == "full" else "Head-only layout: the basis and users are here, the backbone is not."}

    reward(x, y, user) = sum_k basis_k(x, y) * s_user[k]

`lore_users.safetensors` holds every known user's weights (`weights` [N, K],
ids in `lore_users.json`), their logits and posterior precisions, the
population prior (`prior_alpha`, a Dirichlet: a new user's weights default to
its mean), the basis in fp32 (`basis` [K, d]) and the backbone's own reward
head (`v_ref`). `lore_users.json` also records tau = {model.tau:g}, the label
noise and how the embeddings were made (the recipe below), which rendering
must follow to reproduce the rewards.

## Use it

```python
from lore_train import PersonalReward
pr = PersonalReward.from_pretrained(DIR)              # device="cuda", dtype=torch.bfloat16
pr.rewards(prompts, completions, users)               # list[float]
pr(prompts=prompts, completions=completions, user_id=users)   # a TRL reward function
pr.add_user("new", [{{"prompt": "...", "chosen": "...", "rejected": "..."}}])
```

Without lore:

```python
{load}```

Render [user: prompt, assistant: response] with the tokenizer's chat template
(no generation prompt, no extra special tokens), read the K logits at the
last token, and dot them with the user's weights.

## Embedder recipe

```json
{json.dumps(recipe, indent=1)}
```
"""
