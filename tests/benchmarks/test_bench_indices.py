"""The data-order benchmark runs at a toy size and writes its JSON (timings are reported, never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a subprocess, like the other benchmark smoke tests

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_indices.py"


def test_indices_benchmark_times_both_methods_and_writes_json(tmp_path):
    env = {"CORRDIFF_BENCH_RESULTS": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    args = ["--samples", "500", "--batch", "64", "--before-steps", "2", "--after-steps", "20"]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "indices.json").read_text())
    assert (data["samples"], data["batch"]) == (500, 64) and data["device_type"] == "cpu"
    before, after = data["records"]
    assert (before["steps_timed"], after["steps_timed"]) == (2, 20)
    assert before["per_step_s"] > 0 and after["per_step_s"] > 0 and data["speedup"] > 0
