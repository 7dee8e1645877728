"""An interrupted run (SIGTERM or SIGKILL), resumed, repeats the uninterrupted run's losses step for step."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training.run_synthetic import losses, main as run_main, MODULE, REPO_ROOT

pytestmark = pytest.mark.slow  # trains in a subprocess, kills it and resumes

STEPS = 40


def wait_for_step(run_dir: Path, step: int, proc, timeout=120.0):
    deadline = time.time() + timeout
    path = run_dir / "regression" / "metrics.csv"
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training exited early with code {proc.returncode}: {proc.stderr.read()}")
        if path.exists() and any(s >= step for s in losses(run_dir)):
            return
        time.sleep(0.02)
    pytest.fail("training did not reach the step in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert run_main(["regression", str(run_dir), str(STEPS)]) == 0
    return losses(run_dir)


def start(run_dir: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", MODULE, "regression", str(run_dir), str(STEPS)],
                            cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, uninterrupted, sig):
    proc = start(tmp_path)
    wait_for_step(tmp_path, 7, proc)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    if sig == signal.SIGTERM:
        assert code == 143  # stopped cleanly after saving a checkpoint of the step it was on
    else:
        assert code == -signal.SIGKILL
    interrupted_at = max(losses(tmp_path))
    assert interrupted_at < STEPS, "the run finished before the signal: make it longer"
    assert run_main(["regression", str(tmp_path), str(STEPS), "--resume"]) == 0
    resumed = losses(tmp_path)
    assert sorted(resumed) == sorted(uninterrupted)  # no step lost, none logged twice
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), f"step {step}"
