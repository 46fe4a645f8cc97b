"""lore_eval: experiments, reports and plots on what lore-train wrote.

    from lore_eval import fewshot_curve, format_markdown
    curve = fewshot_curve(model, benchmark, shots=[1, 5, 20], trials=20)
    annotator_consistency(benchmark.seen_train, benchmark.seen_test)  # a personal signal?
    print(format_markdown(load_results("runs/llmfao")))   # lore_train.load_results

Training, the four-setting evaluation, results files and model selection
are lore_train's (``lore_train.evaluate``, ``run_sweep``, ``select_model``...).
"""

from .consistency import annotator_consistency
from .fewshot import fewshot_curve, run_fewshot
from .fewshot_files import load_fewshot, plot_accuracy_vs_shots, write_fewshot
from .report import format_markdown

__all__ = [
    "annotator_consistency",
    "fewshot_curve",
    "format_markdown",
    "load_fewshot",
    "plot_accuracy_vs_shots",
    "run_fewshot",
    "write_fewshot",
]
__version__ = "0.1.0"
