"""`score` and `baseline` commands through typer, and the errors a user can fix: each names file and variable."""

import numpy as np
import pytest
import typer
import xarray as xr
from typer.testing import CliRunner

from corrdiff.cli.evaluation import baseline_app, report_command, score_command
from tests.data import fixtures as data_fixtures  # a tiny dataset spec with coarse and fine stores
from tests.evaluation import evaluation_fixtures as fx


def make_app() -> typer.Typer:
    """The commands registered as the main CLI registers them."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("score")(score_command)
    app.command("report")(report_command)
    app.add_typer(baseline_app, name="baseline")
    return app


def invoke(*args):
    return CliRunner().invoke(make_app(), [str(a) for a in args])


@pytest.fixture
def case(tmp_path):
    ens, truth, arrays = fx.write_case(tmp_path, times=5, members=3, shape=(12, 12))
    return tmp_path, ens, truth, arrays


@pytest.fixture(scope="module")
def spec_case(tmp_path_factory):
    """A dataset spec (tests/data fixtures: targets t2m, u10, refl; inputs t2m, u10, t@850) and an ensemble
    for its test times on its fine grid, in generate's layout."""
    folder = tmp_path_factory.mktemp("spec")
    spec = data_fixtures.write_generic(folder)
    fine = xr.open_dataset(folder / "fine.nc")
    test = fine.sel(time=slice("2021-01-02T03", None))
    rng = np.random.default_rng(0)
    ensemble, regression = {}, {}
    for v in ("t2m", "u10", "refl"):
        truth = test[v].values
        regression[v] = truth + rng.normal(0, 0.3, truth.shape).astype(np.float32)
        ensemble[v] = (regression[v][:, None] + rng.normal(0, 0.3, (truth.shape[0], 4, *truth.shape[1:]))).astype(np.float32)
    path = fx.write_ensemble(folder / "ens.nc", ensemble, regression, times=test["time"].values,
                             lat_lon=(fine["XLAT"].values, fine["XLONG"].values),
                             attrs={v: fine[v].attrs for v in ensemble})
    return folder, spec, path


def test_score_prints_the_table_and_writes_tidy_netcdf(case):
    folder, ens, truth, _ = case
    result = invoke("score", ens, "--truth", truth, "--out", folder / "scores.nc")
    assert result.exit_code == 0, result.output
    assert "corrdiff" in result.output and "regression" in result.output and "CRPS" in result.output
    scores = xr.open_dataset(folder / "scores.nc")
    assert scores["crps"].dims == ("model", "variable")
    assert scores["crps_by_time"].dims == ("model", "variable", "time") and scores.sizes["time"] == 5
    assert scores["rank_histogram"].dims == ("model", "variable", "rank") and scores.sizes["rank"] == 4
    assert {"power_ratio_smallest_octave", "wasserstein", "p999_difference"} <= set(scores.data_vars)


def test_score_with_a_spec_adds_interpolation_and_baselines(spec_case, tmp_path):
    folder, spec, ens = spec_case
    rf = tmp_path / "rf.nc"
    result = invoke("baseline", "rf", spec, "--out", rf, "--samples", 400, "--trees", 4)
    assert result.exit_code == 0, result.output
    interp = tmp_path / "interp.nc"
    assert invoke("baseline", "interp", spec, "--out", interp).exit_code == 0
    with xr.open_dataset(interp) as ds:
        assert ds["t2m"].dims == ("time", "member", "y", "x") and ds.sizes["member"] == 1
        assert set(ds.data_vars) == {"t2m", "u10", "generation_complete"}  # refl is no input
    out = tmp_path / "scores.nc"
    result = invoke("score", ens, "--truth", spec, "--baseline", f"rf={rf}", "--out", out, "--split", "test")
    assert result.exit_code == 0, result.output
    scores = xr.open_dataset(out)
    assert list(scores["model"].values) == ["corrdiff", "regression", "interp", "rf"]
    assert np.isnan(scores["mae"].sel(model="interp", variable="refl"))  # not among the inputs
    # the fixture's t2m is linear in lat/lon plus noise: interpolation is good, but no better than the noise
    assert float(scores["mae"].sel(model="interp", variable="t2m")) < 1.0
    assert np.isfinite(scores["crps"].sel(model="rf")).all()


def test_only_complete_times_are_scored(tmp_path):
    truth, ensemble, regression = fx.case(times=4, members=2, shape=(8, 8))
    ens = fx.write_ensemble(tmp_path / "e.nc", ensemble, regression, complete=[1, 1, 0, 1])
    result = invoke("score", ens, "--truth", fx.write_truth(tmp_path / "t.nc", truth), "--out", tmp_path / "s.nc")
    assert result.exit_code == 0, result.output
    assert xr.open_dataset(tmp_path / "s.nc").sizes["time"] == 3


def error_of(result) -> str:
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())  # rich/typer may wrap long lines


def test_error_when_truth_lacks_a_variable(case):
    folder, ens, _, arrays = case
    truth = fx.write_truth(folder / "no_vort.nc", {n: a for n, a in arrays["truth"].items() if n != "vorticity"})
    message = error_of(invoke("score", ens, "--truth", truth))
    assert "no_vort.nc" in message and "'vorticity'" in message
    # scoring the variables truth has works
    assert invoke("score", ens, "--truth", truth, "--variable", "u", "--variable", "v").exit_code == 0


def test_error_when_times_do_not_overlap(case):
    folder, ens, _, arrays = case
    later = fx.write_truth(folder / "later.nc", arrays["truth"], times=fx.time_axis(5, start="2023-01-01"))
    message = error_of(invoke("score", ens, "--truth", later))
    assert "no time in common" in message and "later.nc" in message and "ens.nc" in message


@pytest.mark.parametrize("problem", ["missing", "baseline", "grid", "variable", "no_member_dim"])
def test_errors_name_the_file_and_what_was_expected(case, problem):
    folder, ens, truth, arrays = case
    if problem == "missing":
        message = error_of(invoke("score", folder / "nope.nc", "--truth", truth))
        assert "nope.nc" in message and "no such file" in message
    elif problem == "baseline":
        message = error_of(invoke("score", ens, "--truth", truth, "--baseline", "rf.nc"))
        assert "rf.nc" in message and "NAME=FILE" in message
    elif problem == "grid":
        small = fx.write_truth(folder / "small.nc", {n: a[:, :8, :8] for n, a in arrays["truth"].items()})
        message = error_of(invoke("score", ens, "--truth", small))
        assert "ens.nc" in message and "small.nc" in message and "12×12" in message
    elif problem == "variable":
        message = error_of(invoke("score", ens, "--truth", truth, "--variable", "t2m"))
        assert "ens.nc" in message and "t2m" in message
    else:
        xr.Dataset({"u": (("time", "lat_bin"), np.zeros((5, 3)))}).to_netcdf(folder / "flat.nc")
        message = error_of(invoke("score", folder / "flat.nc", "--truth", truth))
        assert "flat.nc" in message and "member" in message


def test_report_time_outside_the_scored_times_is_refused(case):
    folder, ens, truth, _ = case
    message = error_of(invoke("report", ens, "--truth", truth, "--out", folder / "r", "--time", "1999-01-01"))
    assert "--time" in message and "2022-07-01" in message


def test_progress_bars_unless_quiet_and_1d_spectra_on_request(case):
    folder, ens, truth, _ = case
    shown = invoke("score", ens, "--truth", truth, "--spectra", "1d", "--out", folder / "s1.nc")
    assert shown.exit_code == 0, shown.output
    assert "scoring:" in shown.output and "spectra and distributions:" in shown.output  # tqdm, on stderr
    assert "1-D spectra along x" in " ".join(shown.output.split())
    with xr.open_dataset(folder / "s1.nc") as scores:
        assert scores.attrs["spectra"] == "1d"
    quiet = invoke("score", ens, "--truth", truth, "-q", "--spectra", "none")
    assert quiet.exit_code == 0 and "scoring:" not in quiet.output and "%|" not in quiet.output
