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


class DataOrder:
    """The order in which training sees the dataset: a fresh permutation per epoch, drawn from (seed, epoch).

    The samples form an endless stream: position p is sample perm_e[p mod N] of epoch e = p div N, and
    global step s takes positions [s·B, (s+1)·B). Every epoch therefore holds each sample once, and a step's
    samples depend on (seed, s, B, N) alone. The current epoch's permutation is kept, so drawing a step costs
    a permutation only when it enters a new epoch (once per N/B steps), not one per sample.
    """

    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed = num_samples, seed
        self._epoch, self._permutation = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The dataset indices of epoch `epoch`, in training order; (num_samples,) int64."""
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_samples, generator=generator)
        return self._permutation

    def step(self, step: int, global_batch: int) -> list[int]:
        """Dataset indices of global step `step`: the next `global_batch` positions of the stream."""
        indices, position, stop = [], step * global_batch, (step + 1) * global_batch
        while position < stop:  # a step may run over the end of an epoch (or, on tiny data, over several)
            epoch, offset = divmod(position, self.num_samples)
            count = min(stop - position, self.num_samples - offset)
            indices += self.permutation(epoch)[offset : offset + count].tolist()
            position += count
        return indices


class MicroBatches(torch.utils.data.Sampler):
    """Index lists of this rank's micro-batches, step after step, from `start_step` on."""

    def __init__(self, start_step, steps, global_batch, micro, accum, info: DistInfo, num_samples, seed):
        self.start_step, self.steps = start_step, steps
        self.global_batch, self.micro, self.accum = global_batch, micro, accum
        self.info, self.num_samples, self.seed = info, num_samples, seed

    def __len__(self):
        return (self.steps - self.start_step) * self.accum

    def __iter__(self):
        order = DataOrder(self.num_samples, self.seed)
        for step in range(self.start_step, self.steps):
            indices = order.step(step, self.global_batch)
            for a in range(self.accum):
                m = self.info.rank * self.accum + a
                yield indices[m * self.micro : (m + 1) * self.micro]


def collate(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples into (condition (batch, C_in, H, W), target (batch, C_out, H, W))."""
    return torch.stack([s.input for s in samples]), torch.stack([s.target for s in samples])


def micro_batching(section: TrainSection, world_size: int, kind: str = "training") -> tuple[int, int]:
    """(micro-batch size, accumulation steps) that give the global batch on `world_size` processes; errors name
    the keys of the `kind` section (regression, diffusion)."""
    per_rank, rest = divmod(section.batch_size, world_size)
    if rest:
        raise ConfigError(f"{kind}.batch_size {section.batch_size} is not divisible by the {world_size} processes; "
                          "choose a multiple of the number of processes")
    micro = section.batch_per_device or per_rank
    if per_rank % micro:
        raise ConfigError(
            f"{kind}.batch_per_device {micro} does not divide the per-process batch {per_rank} "
            f"({kind}.batch_size {section.batch_size} over {world_size} processes); choose a divisor of {per_rank}"
        )
    return micro, per_rank // micro
