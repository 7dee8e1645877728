"""What `score`, `report`, `baseline` and `data stats` guarantee, provoked the way a user meets it: through the
command line, with exit code 2 and a message naming the file and the variable.

1. No command writes over one of its inputs (same path, symbolic link, hard link, inside an input store),
   and none replaces an existing output unless --overwrite is given and it is an earlier output of its kind.
2. `score` counts NaN/inf values per model and variable (a note, `nan_*` in scores.nc) and refuses a model
   or truth with no finite value.
3. `data stats` counts NaN/inf per channel and applies the spec's `nan_policy` before anything is trained.
4. Truth and forecasts in different units are refused, not scored.
5. A forecast is scored only when it is placed: its lat/lon are truth's, point by point, within a tenth of the
   grid spacing; a flipped or shifted grid is refused naming the flip or the offset, and a file without lat/lon
   is refused unless --same-grid says it is on truth's grid points.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import typer
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff.cli.data import app as data_app
from corrdiff.cli.evaluation import baseline_app, report_command, score_command
from corrdiff.errors import EvaluationError
from corrdiff.evaluation import evaluate
from tests.data import fixtures as data_fixtures
from tests.evaluation import evaluation_fixtures as fx


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("score")(score_command)
    app.command("report")(report_command)
    app.add_typer(baseline_app, name="baseline")
    app.add_typer(data_app, name="data")
    return app


def invoke(*args):
    return CliRunner().invoke(make_app(), [str(a) for a in args])


def error_of(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # rich/typer may wrap long lines


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def case(tmp_path):
    ens, truth, arrays = fx.write_case(tmp_path, times=3, members=2, shape=(8, 8), variables=("u", "v"))
    return tmp_path, ens, truth, arrays


@pytest.fixture
def spec(tmp_path):
    return data_fixtures.write_generic(tmp_path / "data")


# --- 1. outputs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "truth"])
def test_score_never_writes_over_an_input(case, how):
    folder, ens, truth, _ = case
    target = {"same path": ens, "truth": truth}.get(how, folder / "alias.nc")
    if how == "symlink":
        os.symlink(ens, target)
    elif how == "hard link":
        os.link(ens, target)
    before = digest(ens), digest(truth)
    message = error_of(invoke("score", ens, "--truth", truth, "--out", target, "--overwrite", "-q"))
    assert f"--out {target}" in message and "never writes over its own inputs" in message
    assert (digest(ens), digest(truth)) == before


def test_score_replaces_only_its_own_scores_and_only_with_overwrite(case):
    folder, ens, truth, _ = case
    foreign = folder / "notes.nc"
    xr.Dataset({"x": ("t", np.arange(3.0))}).to_netcdf(foreign)
    before = digest(foreign)
    message = error_of(invoke("score", ens, "--truth", truth, "--out", foreign, "--overwrite", "-q"))
    assert "notes.nc exists and is not a corrdiff scores file" in message and digest(foreign) == before
    out = folder / "scores.nc"
    assert invoke("score", ens, "--truth", truth, "--out", out, "-q").exit_code == 0
    message = error_of(invoke("score", ens, "--truth", truth, "--out", out, "-q"))
    assert "scores.nc exists (a corrdiff scores file); pass --overwrite" in message
    assert invoke("score", ens, "--truth", truth, "--out", out, "--overwrite", "-q").exit_code == 0


def test_report_updates_only_a_corrdiff_report_folder(case):
    folder, ens, truth, _ = case
    photos = folder / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8")
    message = error_of(invoke("report", ens, "--truth", truth, "--out", photos, "--overwrite", "-q"))
    assert "photos exists and is not a corrdiff report folder" in message
    earlier = folder / "report"
    earlier.mkdir()
    (earlier / "index.html").write_text('<html><head><meta name="generator" content="corrdiff report"></head></html>')
    xr.Dataset({"x": ("t", np.arange(3.0))}).to_netcdf(earlier / "scores.nc")  # not scores: never replaced
    message = error_of(invoke("report", ens, "--truth", truth, "--out", earlier, "--overwrite", "-q"))
    assert "scores.nc exists and is not a corrdiff scores file" in message
    (earlier / "scores.nc").unlink()
    message = error_of(invoke("report", ens, "--truth", truth, "--out", earlier, "-q"))
    assert "report exists (a corrdiff report folder); pass --overwrite" in message
    result = invoke("report", ens, "--truth", truth, "--out", earlier, "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert (earlier / "scores.nc").exists() and (earlier / "map_u.png").exists()


def test_report_never_writes_inside_an_input_store(tmp_path):
    truth, ensemble, regression = fx.case(times=2, members=2, shape=(8, 8), variables=("u",))
    ens = fx.write_ensemble(tmp_path / "ens.zarr", ensemble, regression, fmt="zarr")
    truth_path = fx.write_truth(tmp_path / "truth.nc", truth)
    message = error_of(invoke("report", ens, "--truth", truth_path, "--out", ens / "report", "-q"))
    assert "is inside the predictions" in message and "ens.zarr" in message
    assert not (ens / "report").exists()


def test_baselines_never_write_over_the_spec_data_and_replace_only_baselines(spec, tmp_path):
    folder = spec.parent
    before = digest(folder / "coarse.nc")
    message = error_of(invoke("baseline", "interp", spec, "--out", folder / "coarse.nc", "--overwrite", "-q"))
    assert "coarse.nc is a file of the dataset spec" in message and digest(folder / "coarse.nc") == before
    message = error_of(invoke("baseline", "rf", spec, "--out", folder / "stats.json", "-q"))
    assert "stats.json is the spec's statistics" in message
    out = tmp_path / "interp.nc"
    assert invoke("baseline", "interp", spec, "--out", out, "-q").exit_code == 0
    message = error_of(invoke("baseline", "interp", spec, "--out", out, "-q"))
    assert "interp.nc exists (a corrdiff baseline file); pass --overwrite" in message
    assert invoke("baseline", "interp", spec, "--out", out, "--overwrite", "-q").exit_code == 0
    ensemble = tmp_path / "ens.nc"  # a generate file is precious: a baseline never replaces it
    fx.write_ensemble(ensemble, {"u": np.zeros((1, 2, 4, 4), np.float32)})
    message = error_of(invoke("baseline", "interp", spec, "--out", ensemble, "--overwrite", "-q"))
    assert "ens.nc exists and is not a corrdiff baseline file" in message


def test_data_stats_never_writes_over_the_data_and_replaces_statistics_only_with_overwrite(spec):
    folder = spec.parent
    raw = yaml.safe_load(spec.read_text())
    raw["stats"] = "fine.nc"
    (folder / "clobber.yaml").write_text(yaml.safe_dump(raw))
    before = digest(folder / "fine.nc")
    message = error_of(invoke("data", "stats", folder / "clobber.yaml", "--overwrite", "-q"))
    assert "fine.nc is a file of the dataset spec" in message and digest(folder / "fine.nc") == before
    assert invoke("data", "stats", spec, "-q").exit_code == 0
    message = error_of(invoke("data", "stats", spec, "-q"))
    assert "stats.json exists (a corrdiff statistics file); pass --overwrite" in message
    assert invoke("data", "stats", spec, "-q", "--overwrite").exit_code == 0


# --- 2. NaN in scoring ----------------------------------------------------------------------------------
def test_score_counts_nan_per_model_and_variable(case):
    folder, _, _, arrays = case
    ensemble, truth = dict(arrays["ensemble"]), dict(arrays["truth"])
    ensemble["u"] = ensemble["u"].copy()
    ensemble["u"][0, 1, :2, :] = np.nan  # 16 member values at time 0 → 16 pixel-times left out
    truth["v"] = truth["v"].copy()
    truth["v"][1, 0, :5] = np.inf
    ens = fx.write_ensemble(folder / "holes.nc", ensemble, arrays["regression"])
    truth_path = fx.write_truth(folder / "truth_holes.nc", truth)
    out = folder / "s.nc"
    result = invoke("score", ens, "--truth", truth_path, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "corrdiff u: 16 of 384 forecast values NaN/inf; 16 of 192 pixel-times left out" in text
    assert "truth v: 5 of 192 values NaN/inf" in text
    scores = xr.open_dataset(out)
    assert int(scores["nan_forecast"].sel(model="corrdiff", variable="u")) == 16
    assert int(scores["left_out"].sel(model="corrdiff", variable="v")) == 5
    assert int(scores["nan_truth"].sel(variable="v")) == 5 and int(scores["nan_truth"].sel(variable="u")) == 0
    assert int(scores["count"].sel(model="regression", variable="u")) == 192


@pytest.mark.parametrize("who", ["corrdiff", "baseline", "truth"])
def test_an_all_nan_model_or_truth_is_an_error_naming_file_and_variable(case, who):
    folder, ens, truth, arrays = case
    if who == "corrdiff":
        ensemble = dict(arrays["ensemble"], v=np.full_like(arrays["ensemble"]["v"], np.nan))
        ens = fx.write_ensemble(folder / "broken.nc", ensemble, arrays["regression"])
        message = error_of(invoke("score", ens, "--truth", truth, "-q"))
        assert "broken.nc: the corrdiff forecast of 'v' is NaN/inf everywhere" in message
    elif who == "baseline":
        blank = {n: np.full_like(a, np.nan) for n, a in arrays["truth"].items()}
        fx.write_truth(folder / "blank.nc", blank)  # plain (time, y, x) fields: a one-member baseline
        message = error_of(invoke("score", ens, "--truth", truth, "--baseline", f"rf={folder / 'blank.nc'}", "-q"))
        assert "blank.nc: the rf forecast of 'u' is NaN/inf everywhere" in message
    else:
        blank = dict(arrays["truth"], u=np.full_like(arrays["truth"]["u"], np.nan))
        message = error_of(invoke("score", ens, "--truth", fx.write_truth(folder / "dry.nc", blank), "-q"))
        assert "dry.nc: truth 'u' is NaN/inf at every pixel" in message


# --- 3. NaN in training data ----------------------------------------------------------------------------
def holes(spec, policy: str | None):
    """The spec's data with a NaN patch in input u10 at 2021-01-01T06 and one NaN in target refl at T03."""
    folder = spec.parent
    coarse = data_fixtures.coarse_dataset()
    coarse["u10"][2, 5:8, 7:9] = np.nan
    coarse.to_netcdf(folder / "holes.nc")
    fine = data_fixtures.fine_dataset()
    fine["refl"][1, 0, 0] = np.nan
    fine.to_netcdf(folder / "fine_holes.nc")
    raw = yaml.safe_load(spec.read_text())
    raw["inputs"]["paths"], raw["targets"]["paths"] = "holes.nc", "fine_holes.nc"
    if policy:
        raw["nan_policy"] = policy
    raw["stats"] = f"stats_{policy}.json"
    path = folder / f"holes_{policy}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_data_stats_refuses_nan_under_the_error_policy(spec):
    message = error_of(invoke("data", "stats", holes(spec, None), "-q"))
    assert "`nan_policy` is 'error'" in message
    assert "input 'u10':" in message and "first at 2021-01-01T06:00:00 (" in message and "holes.nc" in message
    assert "target 'refl': 1 NaN/inf values in 1 of 9 times, first at 2021-01-01T03:00:00" in message
    assert "fine_holes.nc" in message and not (spec.parent / "stats_None.json").exists()


@pytest.mark.parametrize("policy", ["fill", "drop"])
def test_data_stats_reports_what_fill_and_drop_will_do(spec, policy):
    result = invoke("data", "stats", holes(spec, policy), "-q")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    info = json.loads((spec.parent / f"stats_{policy}.json").read_text())["info"]
    assert info["nan_policy"] == policy and info["nonfinite"]["target"]["refl"] == 1
    assert info["nonfinite"]["input"]["u10"] > 0 and info["nonfinite"]["input"]["t2m"] == 0
    checked = invoke("data", "check", spec.parent / f"holes_{policy}.yaml")
    total = sum(n for counts in info["nonfinite"].values() for n in counts.values())
    assert f"{total} NaN/inf values in split 'train' (nan_policy {policy})" in " ".join(checked.output.split())
    if policy == "fill":
        assert "nan_policy fill:" in text and "filled with the channel mean" in text and info["times"] == 9
    else:
        assert "nan_policy drop: 2 of 9 times have NaN/inf values" in text and info["dropped_times"] == 2
        assert info["times"] == 7


# --- 4. units -------------------------------------------------------------------------------------------
def test_truth_in_other_units_than_the_forecast_is_refused(tmp_path):
    truth, ensemble, regression = fx.case(times=2, members=2, shape=(8, 8), variables=("t2m",))
    kelvin = {"t2m": {"units": "K", "long_name": "2 m temperature"}}
    ens = fx.write_ensemble(tmp_path / "ens.nc", {"t2m": ensemble["t2m"] + 290}, {"t2m": regression["t2m"] + 290},
                            attrs=kelvin)
    celsius = tmp_path / "celsius.nc"
    xr.Dataset({"t2m": (("time", "y", "x"), truth["t2m"] + 17, {"units": "°C"})}, fx.coords(fx.time_axis(2), (8, 8))
               ).to_netcdf(celsius)
    message = error_of(invoke("score", ens, "--truth", celsius, "-q"))
    assert "ens.nc (corrdiff): 't2m' is in 'K' but truth (" in message and "celsius.nc) is in '°C'" in message
    assert "K = °C + 273.15" in message
    spelled = tmp_path / "kelvin.nc"  # the same unit spelled otherwise is accepted
    xr.Dataset({"t2m": (("time", "y", "x"), truth["t2m"] + 290, {"units": "kelvin"})},
               fx.coords(fx.time_axis(2), (8, 8))).to_netcdf(spelled)
    assert invoke("score", ens, "--truth", spelled, "-q", "--spectra", "none").exit_code == 0


# --- 5. placed data -------------------------------------------------------------------------------------
def flip(arrays: dict, axis: int) -> dict:
    """Every (…, y, x) array of `arrays` in the opposite order along y (axis -2) or x (axis -1)."""
    return {n: np.flip(a, axis=axis).copy() for n, a in arrays.items()}


def without_lat_lon(path):
    """The file at `path` rewritten without its lat/lon coordinates (as a file from another tool may come)."""
    ds = xr.load_dataset(path).drop_vars(["lat", "lon"])
    for name in ds.variables:
        ds[name].attrs.pop("coordinates", None)
        ds[name].encoding.pop("coordinates", None)
    ds.to_netcdf(path)
    return path


def test_a_forecast_without_lat_lon_is_refused_unless_it_is_said_to_be_on_truths_grid(case):
    folder, _, truth, arrays = case
    # the file: flipped north-south and without coordinates to tell, which scored 2.5× the true MAE
    ens = without_lat_lon(fx.write_ensemble(folder / "bare.nc", flip(arrays["ensemble"], -2),
                                            flip(arrays["regression"], -2)))
    message = error_of(invoke("score", ens, "--truth", truth, "-q", "--spectra", "none"))
    assert f"{ens} (corrdiff) has no 2-D lat/lon: it cannot be placed against truth ({truth})" in message
    assert "pass --same-grid if it is on truth's grid points" in message
    with pytest.raises(EvaluationError, match="bare.nc .corrdiff. has no 2-D lat/lon"):
        evaluate(ens, truth, distributions=False)
    # the user says it is on truth's grid: scored, with a note saying what was taken on trust
    result = invoke("score", ens, "--truth", truth, "-q", "--spectra", "none", "--same-grid")
    assert result.exit_code == 0, result.output
    assert "has no 2-D lat/lon: taken to be on the same grid points (--same-grid)" in " ".join(result.output.split())
    found = evaluate(ens, truth, distributions=False, same_grid=True)
    assert found.scores.sizes["time"] == 3
    found.evaluation.close()


def test_truth_without_lat_lon_is_refused_unless_same_grid(case):
    folder, ens, _, arrays = case
    bare = without_lat_lon(fx.write_truth(folder / "bare_truth.nc", arrays["truth"]))
    message = error_of(invoke("score", ens, "--truth", bare, "-q", "--spectra", "none"))
    assert f"truth ({bare}) has no 2-D lat/lon: {ens} (corrdiff) cannot be placed against it" in message
    assert invoke("score", ens, "--truth", bare, "-q", "--spectra", "none", "--same-grid").exit_code == 0


PLACEMENTS = {  # how the forecast's grid differs from truth's, and what the one line says
    "flipped north-south": (lambda lat, lon: (lat[::-1], lon[::-1]), -2, "flipped north–south (its first row is at"),
    "flipped east-west": (lambda lat, lon: (lat[:, ::-1], lon[:, ::-1]), -1, "flipped east–west (its first column"),
    "shifted a cell north": (lambda lat, lon: (lat + 0.09, lon), None, "shifted from truth's"),
    "shifted a fifth of a cell east": (lambda lat, lon: (lat, lon + 0.018), None, "+0.018° east"),
}


@pytest.mark.parametrize("how", sorted(PLACEMENTS))
def test_a_flipped_or_shifted_forecast_is_never_scored(case, how):
    folder, _, truth, arrays = case
    move, axis, words = PLACEMENTS[how]
    ensemble, regression = arrays["ensemble"], arrays["regression"]
    if axis is not None:  # the data turned with its coordinates: the file is consistent, just not truth's order
        ensemble, regression = flip(ensemble, axis), flip(regression, axis)
    ens = fx.write_ensemble(folder / "moved.nc", ensemble, regression, lat_lon=move(*fx.grid((8, 8))))
    for same_grid in ([], ["--same-grid"]):  # --same-grid is for files without lat/lon: these say otherwise
        message = error_of(invoke("score", ens, "--truth", truth, "-q", "--spectra", "none", *same_grid))
        assert f"{ens} (corrdiff): its grid is" in message and words in message, message
        assert f"truth's ({truth})" in message and "scores would compare different places" in message
    with pytest.raises(EvaluationError, match="its grid is"):
        evaluate(ens, truth, distributions=False)


def test_truth_with_1d_latitude_and_longitude_is_placed(case):
    """A truth store on a regular grid, its coordinates named as many files name them: latitude(y), longitude(x)."""
    folder, ens, _, arrays = case
    lat, lon = fx.grid((8, 8))
    regular = folder / "regular.nc"
    xr.Dataset({n: (("time", "y", "x"), a, fx.attrs_of(n)) for n, a in arrays["truth"].items()},
               {"time": fx.time_axis(3), "latitude": ("y", lat[:, 0]), "longitude": ("x", lon[0])}).to_netcdf(regular)
    assert invoke("score", ens, "--truth", regular, "-q", "--spectra", "none").exit_code == 0
    flipped = folder / "flipped.nc"  # and placed, so a flip is seen
    xr.Dataset({n: (("time", "y", "x"), a[:, ::-1], fx.attrs_of(n)) for n, a in arrays["truth"].items()},
               {"time": fx.time_axis(3), "latitude": ("y", lat[::-1, 0]), "longitude": ("x", lon[0])}
               ).to_netcdf(flipped)
    assert "flipped north–south" in error_of(invoke("score", ens, "--truth", flipped, "-q", "--spectra", "none"))


def test_lat_lon_that_agree_within_a_tenth_of_a_cell_are_the_same_grid(case):
    """Longitudes in 0..360 against -180..180, and coordinates rounded to 0.001°, are the same points."""
    folder, _, truth, arrays = case
    lat, lon = fx.grid((8, 8))
    lon = lon - 360.0  # 120°E written as -240°
    ens = fx.write_ensemble(folder / "same.nc", arrays["ensemble"], arrays["regression"],
                            lat_lon=(np.round(lat + 0.0004, 3), lon))
    assert invoke("score", ens, "--truth", truth, "-q", "--spectra", "none").exit_code == 0
