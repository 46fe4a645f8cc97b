"""lore_eval: accuracy in the four settings, experiments, results files and plots.

    from lore_eval import evaluate, run_rank_sweep
    scores = evaluate(model, benchmark)      # {"seen_train": {mean, std, n_users, per_user}, ...}
    results = run_rank_sweep(benchmark, [0, 1, 2, 3], [0.0], TrainConfig(), "runs/llmfao")
"""

from .experiment import run_rank_sweep
from .metrics import SETTINGS, accuracy, evaluate, per_user_accuracy, summarize
from .plots import plot_accuracy_vs_rank
from .report import format_table
from .results import load_results, write_results

__all__ = [
    "SETTINGS",
    "accuracy",
    "evaluate",
    "format_table",
    "load_results",
    "per_user_accuracy",
    "plot_accuracy_vs_rank",
    "run_rank_sweep",
    "summarize",
    "write_results",
]
__version__ = "0.1.0"
