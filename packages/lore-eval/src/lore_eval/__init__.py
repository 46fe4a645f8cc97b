"""lore_eval: accuracy in the four settings, experiments, results files and plots.

    from lore_eval import evaluate, run_rank_sweep
    scores = evaluate(model, benchmark)      # {"seen_train": {mean, std, n_users, per_user}, ...}
    results = run_rank_sweep(benchmark, [0, 1, 2, 3], [0.0], TrainConfig(), "runs/llmfao")
    choice = select_model(benchmark, [1, 2, 3], [0.0], TrainConfig())   # validation, no test pairs
    curve = fewshot_curve(model, benchmark, shots=[1, 5, 20], trials=20)
    print(format_markdown(results))
"""

from .experiment import run_rank_sweep
from .fewshot import fewshot_curve, run_fewshot
from .fewshot_files import load_fewshot, plot_accuracy_vs_shots, write_fewshot
from .loss_curves import plot_loss_curves
from .metrics import SETTINGS, accuracy, evaluate, per_user_accuracy, summarize
from .plots import plot_accuracy_vs_rank
from .report import format_markdown, format_selection, format_table
from .results import load_results, write_results
from .selection import Selection, choice_test_numbers, select_model, validation_split

__all__ = [
    "SETTINGS",
    "Selection",
    "accuracy",
    "choice_test_numbers",
    "evaluate",
    "fewshot_curve",
    "format_markdown",
    "format_selection",
    "format_table",
    "load_fewshot",
    "load_results",
    "per_user_accuracy",
    "plot_accuracy_vs_rank",
    "plot_accuracy_vs_shots",
    "plot_loss_curves",
    "run_fewshot",
    "run_rank_sweep",
    "select_model",
    "summarize",
    "validation_split",
    "write_fewshot",
    "write_results",
]
__version__ = "0.1.0"
