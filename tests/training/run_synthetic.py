"""Train on the synthetic dataset from a command line, for tests that kill or torchrun a training process.

usage: python run_synthetic.py KIND RUN_DIR STEPS [--resume] [--set key=value ...]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import SyntheticDataset  # noqa: E402

from corrdiff.config import apply_overrides, RunConfig  # noqa: E402
from corrdiff.training import run_training  # noqa: E402
from corrdiff.training.distributed import init_distributed, shutdown  # noqa: E402


def synthetic_config(run_dir: str, steps: int, overrides=()) -> RunConfig:
    """A tiny, fast run config: every step logged, checkpoints every 5 steps."""
    train = dict(steps=steps, batch_size=8, lr=2e-3, warmup_steps=3, log_every=1, validate_every=1000,
                 checkpoint_every=5, keep_last=2, validation_samples=4)
    raw = {"data": "unused", "run_dir": run_dir, "device": "cpu",
           "model": {"preset": "tiny", "attn_resolutions": []},
           "regression": dict(train), "diffusion": dict(train)}
    return RunConfig(**apply_overrides(raw, list(overrides)))


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
