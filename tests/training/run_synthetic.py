"""Train on the synthetic dataset from a command line, for tests that kill or torchrun a training process.

usage, from the repository root: python -m tests.training.run_synthetic KIND RUN_DIR STEPS [--resume] [key=value ...]
(under torchrun: torchrun ... -m tests.training.run_synthetic ...)

For kill tests, CORRDIFF_TEST_KILL="FUNCTION:NEEDLE[+NEEDLE...][:MODE]" makes the process SIGKILL itself when
corrdiff.checkpoint_writer.FUNCTION (`_write_bytes`, `atomic_write_text`; or shutil.rmtree, for "rmtree") is called
with arguments whose text holds every NEEDLE: MODE "before" (default) the call, "after" it, "half" after writing
half of `_write_bytes`' data, or "partial" after deleting one file of the folder `rmtree` was given.
"""

import csv
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

from corrdiff import checkpoint_writer
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


def kill_when_called(spec: str) -> None:
    """Patch the function that `spec` names (see the module docstring) to SIGKILL this process."""
    function, needles, *mode = spec.split(":")
    mode = mode[0] if mode else "before"
    owner = shutil if function == "rmtree" else checkpoint_writer
    real = getattr(owner, function)

    def killing(*args, **kwargs):
        text = " ".join(str(a) for a in args)
        if all(needle in text for needle in needles.split("+")):
            if mode == "half":
                path, data = args
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
            elif mode == "partial":
                next(p for p in Path(args[0]).iterdir() if p.is_file()).unlink()
            elif mode == "after":
                real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, function, killing)


def main(argv):
    kind, run_dir, steps = argv[0], argv[1], int(argv[2])
    if os.environ.get("CORRDIFF_TEST_KILL"):
        kill_when_called(os.environ["CORRDIFF_TEST_KILL"])
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
