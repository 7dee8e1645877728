"""DDP with micro-batches all-reduces gradients once per optimizer step, also when the network is compiled."""

import json
import os
import subprocess
import sys

import pytest

from tests.training.run_synthetic import REPO_ROOT
from tests.training.test_distributed import free_port

pytestmark = pytest.mark.slow  # torchrun, two processes, dynamo tracing: about half a minute on 2 cores


def test_compiled_ddp_all_reduces_once_per_step(tmp_path):
    out = tmp_path / "counts.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                f"--master_port={free_port()}", "--master_addr=127.0.0.1"]
    result = subprocess.run(torchrun + ["-m", "tests.training.ddp_sync_worker", str(tmp_path / "run"), "2", str(out)],
                            cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(out.read_text())
    assert counts["micro_batches_per_step"] == 2  # batch 8 over 2 processes in micro-batches of 2
    assert counts["synced_backwards"] == counts["steps"] == 2
