"""lore_eval: metrics, experiments, plots and the command-line tools."""
__version__ = "0.1.0"
