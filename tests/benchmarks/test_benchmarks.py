"""The benchmark scripts run (at toy sizes, corrdiff alone when PhysicsNeMo is absent) and write sane JSON.

Timings are not asserted here: speed targets live in the benchmarks' own output (docs/benchmarks.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two benchmark scripts in subprocesses, the paper-size network: about a minute

BENCH = Path(__file__).parents[2] / "benchmarks"


def run_bench(script, args, tmp_path):
    env = {"CORRDIFF_BENCH_RESULTS": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run_bench("bench_unet.py", ["--device", "cpu", "--sizes", "16", "--batches", "1", "--repeats", "1"], out)
    run_bench("bench_sampling.py", ["--device", "cpu", "--size", "16", "--batches", "2", "--steps", "2"], out)
    run_bench("bench_patching.py", ["--device", "cpu", "--quick"], out)
    return out


def test_unet_benchmark_counts_flops_and_times_both_passes(results):
    data = json.loads((results / "unet.json").read_text())
    assert data["device_type"] == "cpu" and data["torch"]
    kinds = {r["kind"]: r for r in data["records"]}
    assert set(kinds) == {"forward", "forward+backward"}
    forward = kinds["forward"]
    assert forward["parameters"] > 70e6  # the paper preset
    # A forward at 16×16 is dominated by convolutions: at least 2·(pixels·C_in·C_out·9) for the first 128→128 layer.
    assert forward["flops"] > 2 * 16 * 16 * 128 * 128 * 9
    assert forward["corrdiff"]["median_s"] > 0
    # Peak memory (the CPU child process): a forward+backward holds activations and the gradients of ~80 M
    # float32 parameters (over 250 MiB), far more than a forward.
    both = kinds["forward+backward"]["corrdiff"]["peak_mib"]
    assert both > 250 and both > 2 * forward["corrdiff"]["peak_mib"]
    assert (forward["ratio_ours_over_reference"] is None) == (data["reference_missing"] is not None)
    # Compiling was not asked for: every contender says so (None), rather than claiming compiled or eager.
    assert data["compile_asked"] is False and forward["corrdiff fast"]["ran_compiled"] is None


def test_sampling_benchmark_reports_seconds_per_member(results):
    data = json.loads((results / "sampling.json").read_text())
    (record,) = data["records"]
    assert record["batch"] == 2 and record["steps"] == 2
    assert record["corrdiff"]["per_member_s"] == pytest.approx(record["corrdiff"]["median_s"] / 2)


def test_patching_benchmark_measures_stitched_calls_beside_one_batch(results):
    data = json.loads((results / "patching.json").read_text())
    cases = {r["case"]: r for r in data["records"]}
    assert set(cases) == {"repeated", "gathered", "one batch"}
    assert data["size"] == 128 and data["patch"] == 64 and data["members"] == 2
    assert all(r["median_s"] > 0 and r["peak_mib"] > 0 for r in cases.values())
