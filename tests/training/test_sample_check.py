"""The sample check of diffusion training: its columns in metrics.csv, the best-crps checkpoint, resuming, off."""

import csv
import json
import math

import pytest

from corrdiff import checkpoint as ckpt
from corrdiff.distributed import init_distributed
from corrdiff.training import run_training
from corrdiff.training.sample_check import SampleCheck
from tests.training.run_synthetic import synthetic_config
from tests.training.synthetic import SyntheticDataset

INFO = init_distributed("cpu")
CHEAP = {"sample_times": 2, "sample_members": 2, "sample_steps": 2}


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """A regression checkpoint (2 steps) that every diffusion run here trains against."""
    run = tmp_path_factory.mktemp("regression-run")
    run_training("regression", synthetic_config(str(run), 2), SyntheticDataset(), SyntheticDataset(8, seed=1), INFO,
                 progress=False)
    return run / "regression"


def train(run_dir, regression, steps, resume=False, **overrides):
    settings = CHEAP | {"regression_checkpoint": str(regression)} | overrides
    config = synthetic_config(str(run_dir), steps, [f"diffusion.{k}={v}" for k, v in settings.items()])
    return run_training("diffusion", config, SyntheticDataset(), SyntheticDataset(8, seed=1), INFO, resume=resume,
                        progress=False)


def rows(run_dir) -> dict[int, dict]:
    with open(run_dir / "diffusion" / "metrics.csv", newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_scores_are_logged_at_every_sample_every_steps_and_at_the_last(tmp_path, regression):
    train(tmp_path, regression, 5, sample_every=2, log_every=1)
    logged = rows(tmp_path)
    checked = [step for step, r in logged.items() if r["val_crps_fair"]]
    assert checked == [2, 4, 5]
    for step in checked:
        row = logged[step]
        for score in ("crps_fair", "spread_skill", "power_ratio", "lsd"):
            per_channel = [float(row[f"val_{score}/{c}"]) for c in ("u", "v")]
            assert all(math.isfinite(v) for v in per_channel)
            assert float(row[f"val_{score}"]) == pytest.approx(sum(per_channel) / 2)  # the channel mean
        assert float(row["val_crps_fair"]) > 0 and float(row["sample_s"]) > 0
    assert all(not logged[s]["val_crps_fair"] and not logged[s]["sample_s"] for s in (1, 3))
    # Fixed noise per time: the same network scores the same. Step 5's checkpoint is the last EMA network.
    meta = ckpt.load_model(tmp_path / "diffusion", "latest").meta
    assert meta.val_crps_fair == pytest.approx(float(logged[5]["val_crps_fair"]))


def test_best_crps_points_at_the_checkpoint_of_the_lowest_fair_crps_and_survives_pruning(tmp_path, regression,
                                                                                          scripted):
    scripted += [0.5, 0.2, 0.4, 0.3]  # steps 2, 4, 6, 8
    train(tmp_path, regression, 8, sample_every=2, checkpoint_every=2, keep_last=1)
    root = tmp_path / "diffusion" / "checkpoints"
    logged = {s: float(r["val_crps_fair"]) for s, r in rows(tmp_path).items() if r["val_crps_fair"]}
    assert logged == {2: 0.5, 4: 0.2, 6: 0.4, 8: 0.3}
    assert ckpt.read_pointer(root, "best-crps") == "step-000004"
    assert ckpt.resolve(tmp_path / "diffusion", "best-crps") == root / "step-000004"
    assert ckpt.load_model(tmp_path / "diffusion", "best-crps").meta.val_crps_fair == 0.2
    # keep_last 1 keeps the latest; best-crps (and best by loss) are kept besides it.
    kept = {p.name for p in root.glob("step-*")}
    assert kept == {"step-000008", "step-000004", ckpt.read_pointer(root, "best")}


def test_resuming_keeps_the_best_fair_crps(tmp_path, regression, scripted):
    scripted += [0.5, 0.2, 0.4, 0.3]
    train(tmp_path, regression, 8, sample_every=2, checkpoint_every=2)
    root = tmp_path / "diffusion" / "checkpoints"
    assert json.loads((root / "step-000008" / "state.json").read_text())["best_crps"] == 0.2
    # A pointer left behind by a kill is put back from the state on resuming.
    ckpt.set_pointer(root, "best-crps", "step-000008")
    scripted += [0.25, 0.3]  # steps 10, 12: both worse than step 4's 0.2
    train(tmp_path, regression, 12, resume=True, sample_every=2, checkpoint_every=2)
    assert ckpt.read_pointer(root, "best-crps") == "step-000004"
    assert json.loads((root / "step-000012" / "state.json").read_text())["best_crps"] == 0.2


@pytest.mark.parametrize("off", [0, "null"])
def test_sample_every_0_or_null_turns_the_check_off(tmp_path, regression, monkeypatch, off):
    def refuse(self, denoiser):
        raise AssertionError("the sample check ran although sample_every is off")

    monkeypatch.setattr(SampleCheck, "run", refuse)
    train(tmp_path, regression, 5, sample_every=off, validate_every=5)
    assert not any(r["val_crps_fair"] for r in rows(tmp_path).values())
    root = tmp_path / "diffusion" / "checkpoints"
    assert ckpt.read_pointer(root, "best-crps") is None
    # Asked for, best-crps reads as best (by validation loss) in such a run.
    assert ckpt.resolve(tmp_path / "diffusion", "best-crps") == root / ckpt.read_pointer(root, "best")


def test_resume_may_change_when_the_check_runs_but_not_what_it_measures(tmp_path, regression, scripted):
    from corrdiff.errors import ConfigError

    scripted += [0.5, 0.4]
    train(tmp_path, regression, 4, sample_every=2)
    with pytest.raises(ConfigError, match=r"diffusion\.sample_members: 2 -> 3"):
        train(tmp_path, regression, 6, resume=True, sample_every=2, sample_members=3)
    scripted += [0.3, 0.35]  # steps 5 (the new sample_every) and 8 (the last step, checked whatever sample_every)
    train(tmp_path, regression, 8, resume=True, sample_every=5)
    assert [s for s, r in rows(tmp_path).items() if r["val_crps_fair"]] == [2, 4, 5, 8]
