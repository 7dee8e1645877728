"""The teacher-against-student study (scripts/distill_study.py) at toy size: it trains the student of a tiny run,
scores the teacher's sampler and the student at 1, 2 and 4 evaluations, and reads both trainings' wall time."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.cli_runner import invoke, succeeded, TINY_RUN
from tests.data import fixtures

REPO = Path(__file__).parents[2]


def study_module():
    spec = importlib.util.spec_from_file_location("distill_study", REPO / "scripts" / "distill_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_study_trains_the_student_and_tables_teacher_and_student(tmp_path, one_thread, capsys):
    fixtures.write_generic(tmp_path / "data")
    config = tmp_path / "config.yaml"
    distill = {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "validate_every": 1, "log_every": 1,
               "num_scales": 4, "keep_last": 5, "sample_every": 1, "sample_times": 2, "sample_members": 2}
    config.write_text(yaml.safe_dump({"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN, "distill": distill}))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    rows = study_module().main([str(config), "--split", "train", "--times", "2", "--members", "2",
                                "--out", str(tmp_path / "table.csv")])
    assert [(r["model"], r["nfe"]) for r in rows] == [("teacher", 3), ("student", 1), ("student", 2), ("student", 4)]
    assert all(np.isfinite(r[c]) for r in rows for c in ("crps_fair_norm", "spread_skill", "lsd", "s_per_member"))
    printed = capsys.readouterr().out
    assert "diffusion: 2 steps" in printed and "distill: 2 steps" in printed and "of the wall-clock time" in printed
    assert (tmp_path / "run" / "distill" / "checkpoints" / "latest").exists() and (tmp_path / "table.csv").exists()
    # Again, the student now trained: its levels ending where --student-sigma-min says, which moves its members
    capsys.readouterr()
    again = study_module().main([str(config), "--split", "train", "--times", "2", "--members", "2", "--nfe", "2",
                                 "--student-sigma-min", "0.1", "--every-checkpoint", "--time-steps", "20"])
    timed = capsys.readouterr().out  # and both steps timed side by side, in a folder of their own
    assert "side by side, 20 steps each: diffusion" in timed and "2 distill steps / 2 diffusion steps cost" in timed
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["diffusion", "distill", "regression"]
    untimed = [{k: v for k, v in r.items() if k != "s_per_member"} for r in (again[0], rows[0])]
    assert untimed[0] == untimed[1]
    # every kept checkpoint, its levels ending where --student-sigma-min says, which moves its members
    assert [(r["step"], r["nfe"], r["sigma_min"]) for r in again[1:]] == [(1, 2, 0.1), (2, 2, 0.1)]
    best = next(r for r in again[1:] if r["step"] == rows[2]["step"])
    assert rows[2]["sigma_min"] == 0.002 and best["crps_fair_norm"] != rows[2]["crps_fair_norm"]


def test_each_nfe_takes_the_sigma_min_of_its_lowest_fair_crps_in_a_tune_folder(tmp_path):
    rows = [("consistency", 2, 0.1, 0.5), ("consistency", 2, 0.03, 0.4), ("consistency", 4, 0.002, 0.3),
            ("consistency", 4, 0.1, 0.35)]
    with open(tmp_path / "tune.csv", "w") as f:
        f.write("solver,network_evaluations,sigma_min,crps_fair_norm\n")
        f.writelines(f"{s},{n},{m},{c}\n" for s, n, m, c in rows)
    study = study_module()
    assert study.tuned_sigma_min(tmp_path, 2) == 0.03 and study.tuned_sigma_min(tmp_path, 4) == 0.002
    with pytest.raises(SystemExit, match="measured no setting at NFE 1; tune it with --nfe 1"):
        study.tuned_sigma_min(tmp_path, 1)
