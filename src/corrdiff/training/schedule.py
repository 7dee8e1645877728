"""The learning-rate schedule: linear warm-up, then constant or a cosine decay to 0 at the last step."""

import math

from corrdiff.config import TrainSection


def warmup_length(section: TrainSection) -> float:
    """Length of the linear warm-up in optimizer steps: `warmup_samples / batch_size` if set, else `warmup_steps`.

    A warm-up given in samples (the reference's `lr_rampup`) may end part-way through a step.
    """
    if section.warmup_samples is not None:
        return section.warmup_samples / section.batch_size
    return section.warmup_steps


def lr_factor(step: int, section: TrainSection) -> float:
    """Multiplier of `section.lr` for optimizer step `step` (0-based).

    Warm-up: the factor grows linearly with the samples seen once this step is done, (step + 1)·batch, and
    reaches 1 at the end of the warm-up. Then 1 (constant) or a cosine decay that reaches 0 at the last step.
    """
    warmup = warmup_length(section)
    if step < warmup:
        return min((step + 1) / warmup, 1.0)
    if section.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(section.steps - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
