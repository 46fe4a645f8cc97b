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
(new users added to a model), ``solver`` and ``newton`` (the few-shot fit on
a frozen basis), ``stopping`` (early stopping's monitor and best-step
records), ``anchor`` (what alpha pulls toward), ``checkpoint`` and ``export``
(files), ``personal_reward`` (text -> rewards, a TRL reward function),
``hf_export`` (the ``lore-export hf`` directory), ``sweep``/``experiment`` (K x
alpha runs), ``metrics``, ``results``,
``selection``, ``tables``, ``plots``, ``distributed`` (the joint fit across
processes), ``launch`` (the command under torchrun) and ``cli`` (the
`lore-train` command).
"""

from .config import FEWSHOT_PRIORS, FEWSHOT_SOLVERS, PRESETS, FewShotSettings, TrainConfig
from .experiment import run_sweep
from .fewshot import personalize
from .metrics import accuracy, evaluate, per_user_accuracy, summarize
from .model import PersonalRewardModel, UnknownUserError
from .objective import row_weights
from .personal_reward import PersonalReward
from .results import load_results, write_results
from .selection import (
    Selection,
    SelectionSettings,
    choice_test_numbers,
    select_model,
    variant_grid,
)
from .solver import fit_few_shot
from .sweep import SweepRun, sweep
from .tables import format_selection, format_table, model_label
from .trainer import FitHistory, fit, prune_columns

__all__ = [
    "FEWSHOT_PRIORS",
    "FEWSHOT_SOLVERS",
    "PRESETS",
    "FewShotSettings",
    "FitHistory",
    "PersonalReward",
    "PersonalRewardModel",
    "Selection",
    "SelectionSettings",
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
    "run_sweep",
    "select_model",
    "summarize",
    "sweep",
    "variant_grid",
    "write_results",
]
__version__ = "0.1.0"
