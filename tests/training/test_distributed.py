"""Two CPU processes under torchrun (gloo) train like one process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.run_synthetic import losses, MODULE, REPO_ROOT

pytestmark = pytest.mark.slow  # torchrun launches and trains in subprocesses

STEPS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final_weights(run_dir: Path, kind: str) -> dict[str, torch.Tensor]:
    folder = run_dir / kind / "checkpoints" / f"step-{STEPS:06d}"
    # the trained network's raw weights, and the target network of consistency distillation
    return {k: v for k, v in load_file(str(folder / "state.safetensors")).items() if k.startswith(("model.", "task."))}


# The distillation's settings the synthetic config does not give (it sets the two other steps').
DISTILL = [f"distill.steps={STEPS}", "distill.batch_size=8", "distill.log_every=1", "distill.checkpoint_every=5",
           "distill.validate_every=1000", "distill.validation_samples=4", "distill.num_scales=6", "distill.lr=1e-3"]


@pytest.mark.parametrize("kind", ["regression", "diffusion", "distill"])
def test_torchrun_two_processes_equal_single_process(tmp_path, kind):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The same 8-sample global batch: one process does two micro-batches of 4, two processes one each.
    micro = [f"{kind}.batch_per_device=4"] + (DISTILL if kind == "distill" else [])
    single, double = tmp_path / "single", tmp_path / "double"
    for run_dir in (single, double):
        for frozen in {"diffusion": ["regression"], "distill": ["regression", "diffusion"]}.get(kind, []):
            # both start from the same frozen networks
            subprocess.run([sys.executable, "-m", MODULE, frozen, str(run_dir), str(STEPS)], cwd=REPO_ROOT,
                           env=env, check=True)
    subprocess.run([sys.executable, "-m", MODULE, kind, str(single), str(STEPS), *micro], cwd=REPO_ROOT, env=env,
                   check=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                f"--master_port={free_port()}", "--master_addr=127.0.0.1"]
    result = subprocess.run(torchrun + ["-m", MODULE, kind, str(double), str(STEPS), *micro], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = losses(single, kind), losses(double, kind)
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), f"step {step}"
    w1, w2 = final_weights(single, kind), final_weights(double, kind)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5, msg=name)
