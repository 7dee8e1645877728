"""Data order: one permutation per epoch gives the indices of the per-sample definition, so runs resume alike."""

import itertools

import pytest
import torch

from corrdiff.distributed import DistInfo
from corrdiff.seeding import derive_seed
from corrdiff.training.batches import DataOrder, MicroBatches


def reference_step_indices(step, global_batch, num_samples, seed):
    """The definition (and the implementation before the per-epoch cache): each position's own permutation."""
    out = []
    for position in range(step * global_batch, (step + 1) * global_batch):
        epoch, offset = divmod(position, num_samples)
        perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))
        out.append(int(perm[offset]))
    return out


# (num_samples, global_batch, steps): batches inside an epoch, straddling one or two epoch ends, larger than
# the dataset (several epochs in one step), a batch of one, and a dataset of one.
CASES = [(50, 8, range(0, 20)), (37, 16, range(0, 12)), (10, 25, range(0, 5)), (7, 1, range(0, 16)),
         (1, 3, range(0, 3)), (1000, 96, [9, 10, 11, 52, 53, 104])]


@pytest.mark.parametrize("num_samples, batch, steps", CASES)
def test_same_indices_as_the_per_sample_definition(num_samples, batch, steps):
    order = DataOrder(num_samples, seed=7)  # one object across steps, as in training: the cached path
    for step in steps:
        expected = reference_step_indices(step, batch, num_samples, 7)
        assert order.step(step, batch) == expected
        assert DataOrder(num_samples, seed=7).step(step, batch) == expected  # a fresh order: no cache


def test_steps_in_any_order_give_the_same_indices():
    """A resumed run (or any process) starts anywhere: the cache must not make a step depend on the one before."""
    steps = [5, 0, 12, 5, 3, 11, 0]
    order = DataOrder(30, seed=1)
    assert [order.step(s, 8) for s in steps] == [reference_step_indices(s, 8, 30, 1) for s in steps]


def test_every_epoch_holds_each_sample_once():
    num_samples, batch = 23, 5
    stream = list(itertools.chain.from_iterable(DataOrder(num_samples, 3).step(s, batch) for s in range(14)))
    for epoch in range(len(stream) // num_samples):
        assert sorted(stream[epoch * num_samples : (epoch + 1) * num_samples]) == list(range(num_samples))
    assert stream[:num_samples] != stream[num_samples : 2 * num_samples]  # a fresh order each epoch


def test_one_permutation_per_epoch(monkeypatch):
    calls = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: calls.append(a[0]) or randperm(*a, **k))
    order = DataOrder(100, seed=0)
    for step in range(40):  # 40 steps of 16 = 640 samples: epochs 0..6
        order.step(step, 16)
    assert len(calls) == 7


def test_micro_batches_split_the_same_steps_over_any_number_of_processes_and_resume_alike():
    num_samples, batch, steps = 29, 12, 6

    def stream(world_size, micro, start=0):
        accum = batch // world_size // micro
        ranks = [DistInfo(r, world_size, r, torch.device("cpu")) for r in range(world_size)]
        per_rank = [list(MicroBatches(start, steps, batch, micro, accum, info, num_samples, seed=4)) for info in ranks]
        # Step s of rank r is micro-batches [s·accum, (s+1)·accum) of its stream; ranks concatenate in order.
        return [sum((per_rank[r][k] for r in range(world_size) for k in range(s * accum, (s + 1) * accum)), [])
                for s in range(steps - start)]

    expected = [reference_step_indices(s, batch, num_samples, 4) for s in range(steps)]
    assert stream(1, 12) == expected
    assert stream(2, 3) == expected
    assert stream(3, 2) == expected
    assert stream(2, 6, start=4) == expected[4:]  # resumed at step 4
