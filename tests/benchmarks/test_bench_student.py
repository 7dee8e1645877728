"""bench_student.py at toy size (--quick): a row per contender with its NFE and a positive speed-up, tabled by
gpu_report. Timings are not asserted (docs/benchmarks.md holds the measured table)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402

CONTENDERS = {"teacher dpmpp_2m": ("teacher", "dpmpp_2m", 7), "teacher heun": ("teacher", "heun", 35),
              "student consistency 1": ("student", "consistency", 1),
              "student consistency 2": ("student", "consistency", 2),
              "student consistency 4": ("student", "consistency", 4)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {"CORRDIFF_BENCH_RESULTS": str(out), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_student.py"), "--quick", "--device",
                             "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "student.json").read_text())


def test_every_contender_has_a_row_with_its_nfe_and_a_positive_speedup(results):
    assert results["device"] and results["date"] and results["members"] == 1 and results["preset"] == "tiny"
    rows = {r["contender"]: r for r in results["records"]}
    assert set(rows) == set(CONTENDERS)
    for name, (network, solver, nfe) in CONTENDERS.items():
        row = rows[name]
        assert (row["network"], row["solver"], row["nfe"]) == (network, solver, nfe)
        assert row["size"] == 16 and len(row["times_s"]) == row["repeats"] == 1
        assert row["per_member_s"] > 0 and row["speedup_vs_dpmpp_2m_7"] > 0
        assert math.isfinite(row["speedup_vs_dpmpp_2m_7"])
    assert rows["teacher dpmpp_2m"]["speedup_vs_dpmpp_2m_7"] == 1.0  # the baseline against itself


def test_gpu_report_tables_every_row(results, tmp_path):
    (tmp_path / "student.json").write_text(json.dumps(results))
    log = tmp_path / "steps.tsv"
    log.write_text("ok\tteacher against student per member (bench_student.py)\t\n")
    text = "\n".join(gpu_report.report(tmp_path, log))
    for name, (_, _, nfe) in CONTENDERS.items():
        assert f"| 16² | {name} | {nfe} |" in text
    assert "| 16² | teacher dpmpp_2m | 7 |" in text and "| 1.00× |" in text
