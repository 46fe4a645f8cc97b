"""lore_train: low-rank personalized reward models (LoRe), their training and evaluation.

    from lore_datasets import load_dataset
    from lore_train import TrainConfig, evaluate, fit, personalize

    bench = load_dataset("llmfao")
    model, history = fit(bench.seen_train, TrainConfig(K=3))
    model = personalize(model, bench.unseen_fewshot, TrainConfig(K=3))
    model.margin(bench.unseen_test)          # reward margins, one per pair
    evaluate(model, bench)                   # accuracy on the four splits
    model.save("runs/k3")                    # model.safetensors + config.json

Modules, one job each: ``config`` (settings and presets), ``model`` (the
parameters, margins and scores), ``trainer`` (the joint fit), ``fewshot``
(new users on a frozen basis), ``stopping`` (early stopping on validation
pairs), ``anchor`` (what alpha pulls toward), ``checkpoint`` and ``export`` (files),
``personal_reward`` (text -> rewards, a TRL reward function), ``hf_export`` (the
``lore-export hf`` directory), ``sweep``/``experiment`` (K x alpha runs), ``metrics``, ``results``,
``selection``, ``tables``, ``plots``, ``distributed`` (the joint fit across
processes), ``launch`` (the command under torchrun) and ``cli`` (the
`lore-train` command).
"""

from .config import PRESETS, TrainConfig
from .experiment import run_rank_sweep
from .fewshot import fit_few_shot, personalize
from .metrics import SETTINGS, accuracy, evaluate, per_user_accuracy, summarize
from .model import PersonalRewardModel, UnknownUserError
from .objective import row_weights
from .personal_reward import PersonalReward
from .results import load_results, write_results
from .selection import Selection, choice_test_numbers, select_model, validation_split
from .sweep import SweepRun, sweep
from .tables import format_selection, format_table, model_label
from .trainer import FitHistory, fit, prune_columns

__all__ = [
    "PRESETS",
    "SETTINGS",
    "FitHistory",
    "PersonalReward",
    "PersonalRewardModel",
    "Selection",
    "SweepRun",
    "TrainConfig",
    "UnknownUserError",
    "accuracy",
    "choice_test_numbers",
    "evaluate",
    "fit",
    "fit_few_shot",
    "format_selection",
    "format_table",
    "load_results",
    "model_label",
    "per_user_accuracy",
    "personalize",
    "prune_columns",
    "row_weights",
    "run_rank_sweep",
    "select_model",
    "summarize",
    "sweep",
    "validation_split",
    "write_results",
]
__version__ = "0.1.0"
