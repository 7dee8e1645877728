"""Training: the loop, checkpoints, EMA and data-parallel plumbing."""

from corrdiff.errors import CheckpointError, TrainingError
from corrdiff.training.checkpoint import load_model
from corrdiff.training.run import load_regression, run_training, train

__all__ = ["CheckpointError", "TrainingError", "load_model", "load_regression", "run_training", "train"]
