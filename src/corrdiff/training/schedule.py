"""The learning-rate schedule: linear warm-up, then constant or a cosine decay to 0 at the last step."""

import math

from corrdiff.config import TrainSection


def lr_factor(step: int, section: TrainSection) -> float:
    """Linear warm-up, then constant or cosine decay to 0 at the last step."""
    if step < section.warmup_steps:
        return (step + 1) / section.warmup_steps
    if section.schedule == "constant":
        return 1.0
    progress = (step - section.warmup_steps) / max(section.steps - section.warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
