"""Every benchmark contender runs under bf16 autocast (the bf16 rows of the GPU benchmarks), on CPU at toy size.

corrdiff's contenders run here, in the test environment. PhysicsNeMo's (plain and fast) live in .venv-bench
(benchmarks/setup_venv.sh, another torch): they are run there in a subprocess, and skipped when it is absent.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
sys.path.insert(0, str(ROOT / "benchmarks"))

from contenders import smoke_run  # noqa: E402


def test_corrdiff_contenders_run_under_cpu_autocast():
    report = smoke_run("cpu", (16, 16), "tiny")
    calls = {"denoise": True, "regression loss": True, "diffusion loss": True, "sample": True}
    assert report["corrdiff"] == report["corrdiff fast"] == calls


def _bench_venv_problem() -> str | None:
    if not BENCH_PY.exists():
        return f"{BENCH_PY} absent (make bench builds it)"
    probe = subprocess.run([str(BENCH_PY), "-c", "import physicsnemo"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"physicsnemo not importable in {BENCH_PY}"


@pytest.mark.slow  # a second torch in a subprocess: about 20 s on 2 cores
def test_every_contender_with_the_reference_runs_under_cpu_autocast():
    problem = _bench_venv_problem()
    if problem:
        pytest.skip(problem)
    result = subprocess.run([str(BENCH_PY), str(ROOT / "benchmarks" / "contenders.py"), "cpu"], capture_output=True,
                            text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"corrdiff", "corrdiff fast", "reference", "reference fast",
                           "amp_mode bit-identical in float32"}
    assert all(all(calls.values()) for name, calls in report.items() if isinstance(calls, dict))
    assert report["amp_mode bit-identical in float32"] is True
