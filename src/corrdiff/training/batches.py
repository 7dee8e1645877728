"""Which samples each step and each process trains on: data order, global batches and micro-batches.

Determinism: the samples of global step s, and every random draw made while computing micro-batch m of
step s (noise levels, noise, patches, dropout), are functions of (seed, s, m) alone. A resumed run, or
one split over another number of processes with the same global batch, therefore repeats the same
computation; resuming only needs the weights, optimizer, EMA and scheduler state, and the step.
"""

import torch

from corrdiff.config import TrainSection
from corrdiff.distributed import DistInfo
from corrdiff.errors import ConfigError
from corrdiff.seeding import derive_seed


def step_indices(step: int, global_batch: int, num_samples: int, seed: int) -> list[int]:
    """Dataset indices of global step `step`: consecutive slices of a fresh permutation per epoch."""
    out = []
    for position in range(step * global_batch, (step + 1) * global_batch):
        epoch, offset = divmod(position, num_samples)
        perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))
        out.append(int(perm[offset]))
    return out


class MicroBatches(torch.utils.data.Sampler):
    """Index lists of this rank's micro-batches, step after step, from `start_step` on."""

    def __init__(self, start_step, steps, global_batch, micro, accum, info: DistInfo, num_samples, seed):
        self.start_step, self.steps = start_step, steps
        self.global_batch, self.micro, self.accum = global_batch, micro, accum
        self.info, self.num_samples, self.seed = info, num_samples, seed

    def __len__(self):
        return (self.steps - self.start_step) * self.accum

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            indices = step_indices(step, self.global_batch, self.num_samples, self.seed)
            for a in range(self.accum):
                m = self.info.rank * self.accum + a
                yield indices[m * self.micro : (m + 1) * self.micro]


def collate(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples into (condition (batch, C_in, H, W), target (batch, C_out, H, W))."""
    return torch.stack([s.input for s in samples]), torch.stack([s.target for s in samples])


def micro_batching(section: TrainSection, world_size: int) -> tuple[int, int]:
    """(micro-batch size, accumulation steps) that give the global batch on `world_size` processes."""
    per_rank, rest = divmod(section.batch_size, world_size)
    if rest:
        raise ConfigError(f"batch_size {section.batch_size} is not divisible by the {world_size} processes")
    micro = section.batch_per_device or per_rank
    if per_rank % micro:
        raise ConfigError(
            f"batch_per_device {micro} does not divide the per-process batch {per_rank} "
            f"(batch_size {section.batch_size} over {world_size} processes)"
        )
    return micro, per_rank // micro
