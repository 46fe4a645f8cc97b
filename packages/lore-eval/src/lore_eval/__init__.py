"""lore_eval: experiments, reports and plots on what lore-train wrote.

    from lore_eval import fewshot_curve, format_markdown
    curve = fewshot_curve(model, benchmark, shots=[1, 5, 20], trials=20)
    annotator_consistency(benchmark.seen_train, benchmark.seen_test)  # a personal signal?
    print(format_markdown(load_results("runs/llmfao")))

Training, the four-setting evaluation, results files and model selection
are lore_train's (``lore_train.evaluate``, ``run_rank_sweep``,
``select_model``...); the names below that come from there are re-exported
so older imports keep working.
"""

from lore_train.experiment import run_rank_sweep
from lore_train.metrics import SETTINGS, accuracy, evaluate, per_user_accuracy, summarize
from lore_train.plots import plot_accuracy_vs_rank, plot_loss_curves
from lore_train.results import load_results, write_results
from lore_train.selection import Selection, choice_test_numbers, select_model, validation_split
from lore_train.tables import format_selection, format_table

from .consistency import annotator_consistency
from .fewshot import fewshot_curve, run_fewshot
from .fewshot_files import load_fewshot, plot_accuracy_vs_shots, write_fewshot
from .report import format_markdown

__all__ = [
    "SETTINGS",
    "Selection",
    "accuracy",
    "annotator_consistency",
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
