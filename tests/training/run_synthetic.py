"""Train on the synthetic dataset from a command line, for tests that kill or torchrun a training process.

usage, from the repository root: python -m tests.training.run_synthetic KIND RUN_DIR STEPS [--resume] [key=value ...]
(under torchrun: torchrun ... -m tests.training.run_synthetic ...)
"""

import csv
import sys
from pathlib import Path

import torch

from corrdiff.config import apply_overrides, RunConfig
from corrdiff.training import run_training
from corrdiff.distributed import init_distributed, shutdown
from tests.training.synthetic import SyntheticDataset

MODULE = "tests.training.run_synthetic"  # for `python -m` and `torchrun -m`, run with cwd = the repository root
REPO_ROOT = Path(__file__).parents[2]


def synthetic_config(run_dir: str, steps: int, overrides=()) -> RunConfig:
    """A tiny, fast run config: every step logged, checkpoints every 5 steps."""
    train = dict(steps=steps, batch_size=8, lr=2e-3, warmup_steps=3, log_every=1, validate_every=1000,
                 checkpoint_every=5, keep_last=2, validation_samples=4)
    raw = {"data": "unused", "run_dir": run_dir, "device": "cpu",
           "model": {"preset": "tiny", "attn_resolutions": []},
           "regression": dict(train), "diffusion": dict(train)}
    return RunConfig(**apply_overrides(raw, list(overrides)))


def losses(run_dir: Path, kind="regression") -> dict[int, float]:
    """The training loss logged at each step of a run: {step: loss}, read from its metrics.csv."""
    with open(run_dir / kind / "metrics.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def main(argv):
    kind, run_dir, steps = argv[0], argv[1], int(argv[2])
    resume = "--resume" in argv
    overrides = [a for a in argv[3:] if "=" in a]
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        _, status = run_training(kind, synthetic_config(run_dir, steps, overrides), SyntheticDataset(),
                                 SyntheticDataset(8, seed=1), info, resume=resume, progress=False)
    finally:
        shutdown(info)
    return 143 if status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
