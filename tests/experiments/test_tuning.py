"""`corrdiff tune`: the grid, the choice rule, the calibration on a known under-dispersed ensemble, the
recommendation file, and the command end to end on tiny trained models (its scores are those of the
ensemble `corrdiff generate` writes with the same sampler)."""

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff import sampler_file
from corrdiff.cli import app
from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.errors import ConfigError, OutputError
from corrdiff.inference import Fingerprint
from corrdiff.config import load_config
from corrdiff.experiments.tuning import check_outputs, label, sampler_grid, Scores, tune, TuneGrid, TuneOutputs, \
    TuneRequest
from corrdiff.experiments.tuning_rule import calibrate, choose, RecommendationRule
from corrdiff.experiments.tuning_files import ROWS, RowLog
from tests.data import fixtures
from tests.training.synthetic import identity_stats


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


# ---- the grid and the choice ------------------------------------------------------------------------------------

def test_grid_spends_each_evaluation_budget_and_churns_only_where_it_applies():
    base = SamplerConfig(S_churn=3.0, S_min=0.1, residual_scale=(2.0,))
    grid = sampler_grid(base, ["heun", "dpmpp_2m"], nfe=[5, 6, 35], churn=[0.0, 1.0], schedules=["karras", "loglinear"])
    heun = [s for s in grid if s.solver == "heun"]
    assert sorted({s.num_steps for s in heun}) == [3, 18]  # NFE 5 and 6 both give 3 Heun steps: measured once
    assert len(heun) == 2 * 2 * 2 and {s.S_churn for s in heun} == {0.0, 1.0}
    dpm = [s for s in grid if s.solver == "dpmpp_2m"]
    assert sorted(s.network_evaluations for s in dpm) == [5, 5, 6, 6, 35, 35] and {s.S_churn for s in dpm} == {0.0}
    assert all(s.S_min == 0.1 and s.residual_scale == () for s in grid)  # the config's other settings are kept
    assert {s.sigma_min for s in grid} == {base.sigma_min}
    twice = sampler_grid(base, ["dpmpp_2m"], nfe=[5], sigma_mins=[0.002, 0.1])
    assert [(s.sigma_min, s.num_steps) for s in twice] == [(0.002, 5), (0.1, 5)]
    assert label(twice[1]).endswith("NFE 5, sigma_min 0.1") and "sigma_min" not in label(twice[0])


def test_choice_is_the_cheapest_within_tolerance_of_the_best():
    table = xr.Dataset({"crps_fair_norm": ("setting", [1.000, 1.009, 1.02, 1.005])},
                       coords={"network_evaluations": ("setting", [35, 11, 5, 11])})
    assert choose(table, 0.01) == 3  # NFE 11 twice within 1%: the lower CRPS of the two
    assert choose(table, 0.001) == 0
    assert choose(table, 0.05) == 2


def test_the_cheapest_skilful_setting_is_refused_when_its_texture_is_grainy():
    """The demo's case: the cheapest setting within 1% of the best CRPS (here the best CRPS itself) carries ~3×
    the truth's small-scale power (LSD 0.25); a setting as skilful with the truth's texture is chosen instead,
    the cheapest of those within 0.05 of the lowest LSD in the CRPS band, not the one with the lowest LSD."""
    table = xr.Dataset({"crps_fair_norm": ("setting", [1.000, 1.004, 1.006, 1.008, 1.050, 1.002]),
                        "lsd_mean": ("setting", [0.25, 0.12, 0.08, 0.04, 0.01, 0.06])},
                       coords={"network_evaluations": ("setting", [5, 7, 9, 35, 3, 11])})
    assert choose(table, 0.01, lsd_tolerance=None) == 0  # CRPS alone: the grainy one
    # LSD within 0.04 + 0.05: NFE 9 (0.08), 11 (0.06) and 35 (0.04). Setting 4 (LSD 0.01) lies outside the CRPS
    # band, so it sets no reference.
    assert choose(table, 0.01) == 2
    assert choose(table, 0.01, lsd_tolerance=0.0) == 3
    assert choose(table, 0.01, lsd_tolerance=float("inf")) == 0
    table["lsd_mean"][:] = np.nan  # no spectra: the CRPS rule alone
    assert choose(table, 0.01) == 0


# ---- calibration ------------------------------------------------------------------------------------------------

def test_calibration_restores_the_spread_of_an_under_dispersed_ensemble():
    """Truth = μ + n and members = μ + n'/2 (n, n' standard normal): a factor near 2 on the residual makes the
    ensemble calibrated (spread/skill ≈ 1) and lowers the CRPS; a calibrated channel keeps a factor near 1."""
    gen = torch.Generator().manual_seed(0)
    times, members, shape = 4, 8, (24, 24)
    kept, truth = [], []
    for _ in range(times):
        mean = torch.randn(1, 2, *shape, generator=gen)
        residual = torch.randn(members, 2, *shape, generator=gen) * torch.tensor([0.5, 1.0]).reshape(1, 2, 1, 1)
        kept.append((mean, mean + residual))
        truth.append((mean[0] + torch.randn(2, *shape, generator=gen)).numpy())
    fitted = calibrate(kept, np.stack(truth), identity_stats(["a"], ["u", "v"]))
    scale = fitted["residual_scale"].values
    assert 1.8 <= scale[0] <= 2.2 and 0.9 <= scale[1] <= 1.1
    # A Gaussian ensemble half as wide has an 8% higher fair CRPS (sqrt(5/4) − 1/(2√2) against 1/√2)
    assert fitted["crps_fair_after"][0] < 0.95 * fitted["crps_fair_before"][0]
    assert (fitted["crps_fair_after"] <= fitted["crps_fair_before"]).all()
    assert 0.95 <= float(fitted["spread_skill_after"][0]) <= 1.05 and float(fitted["spread_skill_before"][0]) < 0.6
    assert 0.95 <= float(fitted["spread_skill_after"][1]) <= 1.05


def test_scores_of_a_perfect_ensemble_member_and_power():
    truth = np.random.default_rng(0).normal(size=(2, 16, 16)).astype(np.float32)
    scores = Scores(2, 3, (16, 16))
    scores.add(np.repeat(truth[None], 3, axis=0), truth, 0)
    result = scores.result()
    assert np.allclose(result["crps"], 0) and np.allclose(result["mae"], 0)
    np.testing.assert_allclose(result["power_ratio"], 1.0)
    assert (result["lsd"] == 0).all()
    scores = Scores(2, 3, (16, 16))
    scores.add(np.repeat(3 * truth[None], 3, axis=0), truth, 0)  # every member 3 × truth: power 9 × truth's
    np.testing.assert_allclose(scores.result()["lsd"], 2 * np.log10(3), rtol=1e-6)


# ---- resuming ----------------------------------------------------------------------------------------------------

def test_row_log_reuses_rows_of_the_same_fingerprint_only(tmp_path, caplog):
    path, same = tmp_path / ROWS, Fingerprint({"diffusion_checkpoint_sha256": "abc", "members": 4})
    heun, euler = SamplerConfig(), SamplerConfig(solver="euler", num_steps=7, S_churn=1.0, S_max=float("inf"))
    rows = RowLog(path, same)
    rng = np.random.default_rng(0)
    measured = []
    for _ in range(2):
        scores = Scores(2, 3, (8, 8))
        for t in range(2):
            scores.add(rng.normal(size=(3, 2, 8, 8)).astype(np.float32), rng.normal(size=(2, 8, 8)), t)
        measured.append(scores)
    measured[0].sums[1][1, 0] = np.nan  # NaN survives the round trip
    rows.add(heun, measured[0], 0.25)
    rows.add(euler, measured[1], 0.1)
    with open(path, "a") as f:
        f.write('{"sampler": {"solver": "dpmpp_2m", "num_')  # the line a kill cut short
    again = RowLog(path, Fingerprint(dict(same.ingredients)))
    scores, seconds = again.get(euler)
    assert seconds == 0.1 and scores.members == 3
    for name, array in measured[1].arrays().items():
        np.testing.assert_array_equal(scores.arrays()[name], array)
    np.testing.assert_array_equal(scores.result()["crps_fair"], measured[1].result()["crps_fair"])
    assert np.isnan(again.get(heun)[0].sums[1][1, 0]) and again.get(SamplerConfig(num_steps=9)) is None
    assert len(path.read_text().splitlines()) == 3  # the cut line is gone: new rows start on a line of their own
    other = RowLog(path, Fingerprint({"diffusion_checkpoint_sha256": "def", "members": 4}))
    assert other.get(heun) is None and "diffusion_checkpoint_sha256" in caplog.text
    assert RowLog(path, same).get(heun) is None  # the other model's log replaced it




# ---- the recommendation file ------------------------------------------------------------------------------------

def test_recommendation_round_trips_and_is_used_only_for_its_checkpoint(tmp_path):
    sampler = SamplerConfig(solver="dpmpp_2m", num_steps=11, residual_scale=(1.2, 0.9))
    recommendation = sampler_file.Recommendation(sampler, "abc", ("u", "v"), {"crps_norm": 0.5, "split": "validation"})
    path = sampler_file.write(sampler_file.path_in(tmp_path), recommendation)
    assert sampler_file.read(path) == recommendation
    assert "S_max: .inf" in path.read_text()
    assert sampler_file.recommended_sampler(tmp_path, "abc") == sampler
    assert sampler_file.recommended_sampler(tmp_path) == sampler
    assert sampler_file.recommended_sampler(tmp_path, "other") is None
    assert sampler_file.recommended_sampler(tmp_path / "none") is None
    path.write_text(path.read_text().replace("solver: dpmpp_2m", "solver: rk4"))
    with pytest.raises(ConfigError, match="sampler.yaml: sampler: solver must be one of"):
        sampler_file.recommended_sampler(tmp_path)


def test_a_recommended_sampler_records_its_arithmetic(tmp_path):
    """sampler.yaml keeps `arithmetic` (a file written before it existed reads as edm)."""
    sampler = SamplerConfig(num_steps=8, S_churn=40.0, arithmetic="physicsnemo")
    path = sampler_file.write(sampler_file.path_in(tmp_path), sampler_file.Recommendation(sampler, "abc", ("u",)))
    assert "arithmetic: physicsnemo" in path.read_text() and sampler_file.read(path).sampler == sampler
    path.write_text(path.read_text().replace("  arithmetic: physicsnemo\n", ""))
    assert sampler_file.read(path).sampler.arithmetic == "edm"


def test_tune_refuses_physicsnemos_arithmetic(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: spec.yaml\nsampler:\n  arithmetic: physicsnemo\n")
    with pytest.raises(ConfigError, match="tune: sampler.arithmetic is physicsnemo.*tune with arithmetic: edm"):
        tune(load_config(path), TuneRequest(tmp_path / "regression", tmp_path / "diffusion"))


def test_existing_outputs_are_refused_without_overwrite(tmp_path):
    (tmp_path / "tune.csv").write_text("x")
    with pytest.raises(OutputError, match="tune.csv exist"):
        check_outputs([tmp_path / "tune.csv", tmp_path / "sampler.yaml"], overwrite=False)
    check_outputs([tmp_path / "tune.csv"], overwrite=True)


# ---- end to end -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both models trained for a few steps, from files, through the command line."""
    folder = tmp_path_factory.mktemp("tune")
    fixtures.write_generic(folder / "data")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": "data/spec.yaml", "run_dir": "run", "device": "cpu",
        "model": {"preset": "tiny", "model_channels": 8, "attn_resolutions": []},
        "regression": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
        "diffusion": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
    }))
    invoke("train", "regression", config, "--quiet")
    invoke("train", "diffusion", config, "--quiet")
    return folder, config


def test_tune_measures_the_grid_recommends_and_matches_generate(trained):
    folder, config = trained
    out = folder / "tuned"
    result = invoke("tune", config, "--split", "test", "--allow-test-split", "--members", 3, "--times", 2,
                    "--solver", "heun", "--solver", "dpmpp_2m", "--nfe", 3, "--nfe", 5, "--churn", 0, "--churn", 2,
                    "--sigma-min", 0.002, "--sigma-min", 0.05, "--out", out, "--quiet")
    assert "recommended:" in result.output
    for name in ("tune.csv", "tune.nc", "tune.png", "sampler.yaml"):
        assert (out / name).exists()
    assert not (folder / "run" / "sampler.yaml").exists()  # --out keeps the run folder as it was
    table = xr.load_dataset(out / "tune.nc")
    assert {k: table.sizes[k] for k in ("setting", "channel", "time")} == {"setting": 12, "channel": 3, "time": 2}
    assert table.sizes["stat"] == 13 + 3 + 1  # the per-time sums: SUMS, EXTREMES and 4 rank counts
    # The per-time sums give the table's scores back, and every combined score has its interval.
    from corrdiff.evaluation.metrics import scores_from_sums
    np.testing.assert_allclose(scores_from_sums(table["sums"].sum("time").values, 3)["crps_fair"],
                               table["crps_fair"].values, rtol=1e-12)
    assert (table["crps_fair_norm_low"] <= table["crps_fair_norm_high"]).all()
    assert (table["crps_fair_norm_diff_low"] <= table["crps_fair_norm_diff_high"]).all()
    assert sorted(set(table["sigma_min"].values.tolist())) == [0.002, 0.05]
    assert list(table["channel"].values) == ["t2m", "u10", "refl"]
    assert sorted(set(table["network_evaluations"].values.tolist())) == [3, 5]
    assert (table["seconds_per_member"] > 0).all() and np.isfinite(table["crps"]).all()
    chosen = int(table.attrs["recommended"])
    assert bool(table["recommended"][chosen]) and chosen == choose(table, 0.01)
    assert (table["crps_fair_after"] <= table["crps_fair_before"]).all()
    assert np.isfinite(table["regression_mae"]).all() and (table["regression_mae"] > 0).all()
    csv = (out / "tune.csv").read_text().splitlines()
    assert len(csv) == 13 and "crps_norm" in csv[0] and "crps_refl" in csv[0]

    # The recommendation is the chosen setting, calibrated, for this diffusion checkpoint.
    recommendation = sampler_file.read(out / "sampler.yaml")
    assert recommendation.split == "test" and recommendation.tuning["crps_fair_norm"] == float(
        table["crps_fair_norm"][chosen])
    row = table.isel(setting=chosen)
    assert (recommendation.sampler.solver, recommendation.sampler.num_steps, recommendation.sampler.sigma_min) == (
        str(row["solver"].values), int(row["num_steps"]), float(row["sigma_min"]))
    scale = table["residual_scale"].values.tolist()
    assert recommendation.sampler.residual_scale == (() if np.allclose(scale, 1.0) else tuple(scale))

    # Its scores are those of the ensemble `corrdiff generate` writes with that sampler for those times.
    uncalibrated = recommendation.sampler
    sets = [f"sampler.{k}={getattr(uncalibrated, k)}"
            for k in ("solver", "schedule", "num_steps", "S_churn", "sigma_min")]
    times = [str(t) for t in table["time"].values]
    ensemble = folder / "ens.nc"
    invoke("generate", config, "--out", ensemble, "--split", "test", "--members", 3, "--quiet",
           *[a for t in times for a in ("--times", t)], *[a for s in sets for a in ("--set", s)])
    fine = fixtures.fine_dataset()
    with xr.open_dataset(ensemble) as ds:
        assert ds.attrs["diffusion_checkpoint_sha256"] == recommendation.diffusion_checkpoint_sha256
        scores = Scores(3, 3, (ds.sizes["y"], ds.sizes["x"]))
        for t, when in enumerate(ds["time"].values):
            truth = np.stack([fine[c].sel(time=when).values for c in ("t2m", "u10", "refl")])
            members = np.stack([ds[c].isel(time=t).values for c in ("t2m", "u10", "refl")], axis=1)
            scores.add(members, truth, t)
    np.testing.assert_allclose(scores.result()["crps"], row["crps"].values, rtol=2e-3)


def test_a_killed_tune_resumes_from_its_rows_and_a_changed_run_does_not(trained, monkeypatch):
    """Killed after the first setting, the rerun measures only the second, and the table equals an
    uninterrupted run's (CPU arithmetic is deterministic); another seed changes the fingerprint: all measured."""
    from corrdiff.experiments import tuning
    from corrdiff.config import load_config

    folder, config_path = trained
    config = load_config(config_path)
    run_dir = folder / "run"
    request = TuneRequest(run_dir / "regression", run_dir / "diffusion", split="test", allow_test_split=True,
                          members=2, times=2)
    grid, rule = TuneGrid(solvers=["euler"], nfe=[2, 3]), RecommendationRule(calibration=False)
    into = lambda name: TuneOutputs(folder / name, folder / name / "s.yaml", progress=False)
    measured, real_measure = [], tuning.measure

    def measure(run, setting, *args, **kwargs):
        if kill_after is not None and len(measured) == kill_after:
            raise KeyboardInterrupt  # as Ctrl-C or a kill between two settings
        measured.append(setting.num_steps)
        return real_measure(run, setting, *args, **kwargs)

    monkeypatch.setattr(tuning, "measure", measure)
    kill_after = 1
    with pytest.raises(KeyboardInterrupt):
        tuning.tune(config, request, grid, rule, into("killed"))
    assert measured == [2] and (folder / "killed" / ROWS).exists() and not (folder / "killed" / "tune.nc").exists()
    kill_after = None
    resumed = tuning.tune(config, request, grid, rule, into("killed"))
    assert measured == [2, 3] and resumed.table.attrs["resumed_settings"] == 1
    assert not (folder / "killed" / ROWS).exists()  # the outputs hold every row
    whole = tuning.tune(config, request, grid, rule, into("whole"))
    for name in ("crps", "lsd", "spread_skill"):
        np.testing.assert_array_equal(resumed.table[name].values, whole.table[name].values)

    measured.clear()
    kill_after = 1
    with pytest.raises(KeyboardInterrupt):
        tuning.tune(config, request, grid, rule, into("changed"))
    kill_after = None
    reseeded = load_config(config_path, ["generate.seed=7"])
    tuning.tune(reseeded, request, grid, rule, into("changed"))
    assert measured == [2, 2, 3]  # the first setting measured again for the new seed


def test_generate_warns_when_it_generates_the_split_its_sampler_was_tuned_on(trained):
    """The command's own split reaches the warning: tuned on test, generating test warns; generating
    train does not."""
    from corrdiff import checkpoint
    from tests.cli_runner import invoke as run_command

    folder, config = trained
    run_dir = folder / "run"
    tuned_dir = folder / "tuned_on_test"
    sha = checkpoint.load_model(run_dir / "diffusion", kind="diffusion").sha256
    sampler_file.write(sampler_file.path_in(tuned_dir), sampler_file.Recommendation(
        SamplerConfig(solver="euler", num_steps=2), sha, ("t2m", "u10", "refl"), {"split": "test"}))
    outputs = {}
    for split in ("test", "train"):
        result = run_command("generate", config, "--out", folder / f"warned_{split}.nc", "--split", split,
                             "--members", 2, "--quiet", "--set", f"run_dir={tuned_dir}", "--checkpoint-regression",
                             run_dir / "regression", "--checkpoint-diffusion", run_dir / "diffusion",
                             "--times", str(fixtures.fine_dataset()["time"].values[-1 if split == "test" else 0]))
        outputs[split] = result.output
    assert "tuned on the test split and this generates the test split" in outputs["test"]
    assert "error" not in outputs["train"] and "tuned on the test split" not in outputs["train"]
