"""Training: the two tasks, the Trainer (the loop), data order, the learning-rate schedule, EMA and the log.

Checkpoints (`corrdiff.checkpoint`), seeds (`corrdiff.seeding`) and process groups (`corrdiff.distributed`)
live at the top level: generation uses them too.
"""

from corrdiff.errors import CheckpointError, TrainingError
from corrdiff.training.run import open_datasets, run_training, train

__all__ = ["CheckpointError", "TrainingError", "open_datasets", "run_training", "train"]
