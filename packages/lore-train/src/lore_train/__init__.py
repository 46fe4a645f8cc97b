"""lore_train: low-rank personalized reward models."""
__version__ = "0.1.0"
