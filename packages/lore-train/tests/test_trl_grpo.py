"""`PersonalReward` as the reward function of the real TRL `GRPOTrainer` (CPU, no download).

A tiny causal LM built from a config (the tiny tokenizer of
`lore_datasets.embed.tiny`) is trained two steps on prompts carrying a
``user_id`` column; two users with opposite weights must get different rewards
for the same completion, and the trainer must pass each row's user.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from lore_train import PersonalReward  # noqa: E402
from lore_train.tiny_export import build_tiny_export  # noqa: E402

# transformers 5 / trl 1.16 deprecation notices about their own arguments
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_export(tmp_path_factory.mktemp("grpo-export"))


class Recording(PersonalReward):
    """PersonalReward that keeps what TRL called it with (and what it answered)."""

    calls: list

    def __call__(self, prompts, completions, user_id=None, **kwargs):
        out = super().__call__(prompts, completions, user_id=user_id, **kwargs)
        self.calls.append((list(prompts), list(completions), list(user_id or []), out))
        return out


def tiny_policy(tokenizer):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


@pytest.mark.parametrize("conversational", [True, False], ids=["chat", "text"])
def test_grpo_trainer_calls_personal_reward_with_each_rows_user(tiny, tmp_path,
                                                               conversational) -> None:
    from trl import GRPOConfig, GRPOTrainer

    from lore_datasets.embed.tiny import tiny_tokenizer

    pr = Recording.from_pretrained(tiny.out)
    pr.calls = []
    # two users with opposite tastes: one rewards basis 0 over basis 2, the other the reverse
    taste = torch.tensor([[100.0, 0.0, -100.0]] * 40)
    fan, critic = pr.add_user("fan", basis_diffs=taste), pr.add_user("critic", basis_diffs=-taste)
    assert fan[0] > 0.5 > fan[2] and critic[2] > 0.5 > critic[0]

    texts = ["the cat sat", "hello world", "a dog on the mat", "the post is short"]
    prompts = [[{"role": "user", "content": t}] for t in texts] if conversational else texts
    data = datasets.Dataset.from_dict({"prompt": prompts * 2,
                                       "user_id": ["fan"] * len(texts) + ["critic"] * len(texts)})
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=4, max_steps=2, report_to="none",
                      use_cpu=True, logging_steps=1, save_strategy="no", bf16=False, seed=0,
                      dataloader_num_workers=0)
    trainer = GRPOTrainer(model=tiny_policy(tiny_tokenizer("left")), reward_funcs=pr, args=args,
                          train_dataset=data, processing_class=tiny_tokenizer("left"))
    trainer.train()

    assert len(pr.calls) == 2  # one reward call per step
    seen_users = {u for _, _, users, _ in pr.calls for u in users}
    assert seen_users <= {"fan", "critic"} and seen_users
    for call_prompts, completions, users, rewards in pr.calls:
        assert len(users) == len(completions) == len(rewards) == 4
        if conversational:
            assert isinstance(completions[0], list) and completions[0][0]["role"] == "assistant"
        else:
            assert isinstance(completions[0], str)
        # what TRL got is each row's own user's reward ...
        assert rewards == pytest.approx(pr.rewards(call_prompts, completions, users), rel=1e-5)
        # ... and the same completion is worth different things to the two users
        as_fan = pr.rewards(call_prompts, completions, ["fan"] * 4)
        as_critic = pr.rewards(call_prompts, completions, ["critic"] * 4)
        for a, b in zip(as_fan, as_critic):
            assert abs(a - b) > 1e-3 * max(abs(a), abs(b))
