"""Under torchrun (gloo, CPU): train a few compiled steps with micro-batches, counting DDP's gradient all-reduces.

usage, from the repository root: torchrun --nproc_per_node=2 -m tests.training.ddp_sync_worker RUN_DIR STEPS OUT_JSON

A DDP communication hook counts the gradient all-reduces; DDP calls it once per bucket in every backward
that synchronises, and bucket 0 once, so the calls for bucket 0 count the synchronising backwards. Rank 0
writes {"synced_backwards": n, "steps": STEPS, "micro_batches_per_step": k} to OUT_JSON.
"""

import functools
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import corrdiff.training.trainer as trainer_module
from corrdiff.distributed import init_distributed, shutdown
from corrdiff.training import run_training
from corrdiff.training.batches import micro_batching
from tests.training.run_synthetic import synthetic_config
from tests.training.synthetic import SyntheticDataset

synced = []


def counting_hook(state, bucket):
    if bucket.index() == 0:
        synced.append(1)
    return allreduce_hook(state, bucket)


class CountingDDP(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_comm_hook(None, counting_hook)


def main(argv):
    run_dir, steps, out = argv[0], int(argv[1]), argv[2]
    torch.set_num_threads(1)
    trainer_module.DistributedDataParallel = CountingDDP
    # Dynamo with the eager backend: what DDP + compile does to the call path, without inductor's build time.
    torch.compile = functools.partial(torch.compile, backend="eager")
    info = init_distributed("cpu")
    config = synthetic_config(run_dir, steps, ["regression.compile=true", "regression.batch_per_device=2",
                                               "regression.checkpoint_every=1000"])
    try:
        run_training("regression", config, SyntheticDataset(), None, info, progress=False)
        _, accum = micro_batching(config.regression, info.world_size, "regression")
        if info.rank == 0:
            with open(out, "w") as f:
                json.dump({"synced_backwards": len(synced), "steps": steps, "micro_batches_per_step": accum}, f)
        dist.barrier()
    finally:
        shutdown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
