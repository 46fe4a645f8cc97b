"""lore_train: low-rank personalized reward models (LoRe).

    from lore_datasets import load_dataset
    from lore_train import TrainConfig, fit, personalize

    bench = load_dataset("llmfao")
    model, history = fit(bench.seen_train, TrainConfig(rank=3))
    model = personalize(model, bench.unseen_fewshot, TrainConfig(rank=3))
    model.margin(bench.unseen_test)          # reward margins, one per pair
    model.save("runs/k3")                    # model.safetensors + config.json
"""

from .config import TrainConfig
from .model import PersonalRewardModel, UnknownUserError
from .sweep import SweepRun, sweep
from .trainer import FitHistory, fit, fit_few_shot, personalize, prune_columns, row_weights

__all__ = [
    "FitHistory",
    "PersonalRewardModel",
    "SweepRun",
    "TrainConfig",
    "UnknownUserError",
    "fit",
    "fit_few_shot",
    "personalize",
    "prune_columns",
    "row_weights",
    "sweep",
]
__version__ = "0.1.0"
