"""benchmarks/cost_table.py: the WRF comparison's formula on sampling results with known answers."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "cost_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("cost_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(device_type, size, per_member_s, threads=2):
    record = {"size": size, "steps": 18, "batch": 4, "corrdiff fast": {"per_member_s": per_member_s}}
    slower = dict(record, batch=1, **{"corrdiff fast": {"per_member_s": 2 * per_member_s}})
    return {"device": "x", "device_type": device_type, "cpu_threads": threads, "date": "d", "records": [slower, record]}


def test_a_gpu_at_the_papers_size_22_times_faster_than_wrf():
    cost_table = load_script()
    cost = cost_table.cost_rows(results("cuda", 448, 91.38 / 22), "corrdiff fast", 1, 15.0, 700.0)
    assert cost["batch"] == 4  # the fastest members-per-call
    assert cost["speedup"] == pytest.approx(22)
    assert cost["energy_ratio"] == pytest.approx(22 * 928 * 15 / 700)


def test_a_cpu_measurement_is_scaled_by_pixels_and_charged_per_core(tmp_path, capsys):
    cost_table = load_script()
    cost = cost_table.cost_rows(results("cpu", 224, 1.0), "corrdiff fast", 2, 15.0, 700.0)
    assert cost["seconds"] == pytest.approx(8.0)  # 4× the pixels, 2 members
    assert cost["core_seconds_ratio"] == pytest.approx(91.38 * 928 / 16.0)
    assert cost["energy_ratio"] == pytest.approx(cost["core_seconds_ratio"])  # same power per core
    path = tmp_path / "sampling.json"
    path.write_text(json.dumps(results("cpu", 224, 1.0)))
    assert cost_table.main(["--json", str(path)]) == 0
    assert "| WRF, paper's Taiwan domain" in capsys.readouterr().out
    assert cost_table.main(["--json", str(tmp_path / "missing.json")]) == 2
