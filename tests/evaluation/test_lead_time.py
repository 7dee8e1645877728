"""Skill by lead time on a synthetic forecast ensemble: 3 reference times × 3 steps flattened along `time`,
with a known error per lead time, so every grouped score has an exact answer."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from corrdiff.evaluation import evaluate
from corrdiff.evaluation.lead_time import as_hours, by_lead_time, lead_hours, lead_time_figure
from tests.evaluation import evaluation_fixtures as fx

STEPS_H = [0, 6, 12]
OFFSET = {0: 0.5, 6: 1.0, 12: 2.0}  # ensemble-mean error (K) per lead time
HALF_SPREAD = 0.2  # members at mean ± this: CRPS = offset − HALF_SPREAD / 2 when offset > HALF_SPREAD


def forecast_case(folder, shape=(8, 8)):
    """(ensemble file, truth file): references 24 h apart, steps 0/6/12 h; members truth + offset ± spread,
    regression truth + 2·offset; a truth field that varies so the ranks are not degenerate."""
    references = pd.date_range("2022-07-01", periods=3, freq="24h").values.astype("datetime64[ns]")
    reference = np.repeat(references, len(STEPS_H))
    lead = np.tile(np.asarray(STEPS_H, float), len(references))
    valid = reference + (lead * 3600).astype("timedelta64[s]")
    rng = np.random.default_rng(0)
    truth = (290 + rng.normal(size=(len(valid), *shape))).astype(np.float32)
    offset = np.array([OFFSET[int(h)] for h in lead], np.float32)[:, None, None]
    members = np.stack([truth + offset - HALF_SPREAD, truth + offset + HALF_SPREAD], axis=1)
    attrs = {"t2m": {"units": "K", "long_name": "2 m temperature"}}
    ens = fx.write_ensemble(folder / "plain.nc", {"t2m": members}, {"t2m": truth + 2 * offset}, times=valid,
                            attrs=attrs)
    with xr.open_dataset(ens) as ds:
        ds = ds.load()
    ds = ds.assign_coords(lead_time=("time", lead, {"units": "hours", "standard_name": "forecast_period"}),
                          forecast_reference_time=("time", reference, {"standard_name": "forecast_reference_time"}))
    ds.to_netcdf(folder / "ens.nc")
    truth_ds = xr.Dataset({"t2m": (("time", "y", "x"), truth, attrs["t2m"])}, fx.coords(valid, shape))
    truth_ds.to_netcdf(folder / "truth.nc")
    return folder / "ens.nc", folder / "truth.nc"


def test_scores_are_grouped_by_lead_time_with_the_known_errors(tmp_path):
    ens, truth = forecast_case(tmp_path)
    result = evaluate(ens, truth, distributions=False)
    result.evaluation.close()
    scores = result.scores
    assert list(as_hours(scores["lead_time"].values)) == STEPS_H
    assert list(scores["times_by_lead_time"].values) == [3, 3, 3]
    offsets = np.array([OFFSET[h] for h in STEPS_H])
    corrdiff, regression = scores.sel(model="corrdiff", variable="t2m"), scores.sel(model="regression", variable="t2m")
    np.testing.assert_allclose(corrdiff["mae_by_lead_time"], offsets, rtol=1e-4)
    np.testing.assert_allclose(corrdiff["rmse_by_lead_time"], offsets, rtol=1e-4)
    np.testing.assert_allclose(corrdiff["bias_by_lead_time"], offsets, rtol=1e-4)
    np.testing.assert_allclose(corrdiff["crps_by_lead_time"], offsets - HALF_SPREAD / 2, rtol=1e-4)
    spread = np.sqrt(2 * HALF_SPREAD**2)  # ddof=1 over the two members
    np.testing.assert_allclose(corrdiff["spread_by_lead_time"], spread, rtol=1e-4)
    np.testing.assert_allclose(corrdiff["spread_skill_by_lead_time"], np.sqrt(1.5) * spread / offsets, rtol=1e-4)
    np.testing.assert_allclose(regression["crps_by_lead_time"], 2 * offsets, rtol=1e-4)  # CRPS = MAE for one member
    path = lead_time_figure(tmp_path / "lead.png", scores)
    assert path.stat().st_size > 0


def test_rmse_pools_squares_and_nan_times_are_left_out():
    scores = xr.Dataset(
        {f"{m}_by_time": (("model", "variable", "time"), np.array([[[1.0, 3.0, 2.0, np.nan]]]))
         for m in ("mae", "rmse", "bias", "crps", "spread")},
        coords={"model": ["corrdiff"], "variable": ["t2m"], "time": np.arange(4)})
    scores["members"] = ("model", [4])
    grouped = by_lead_time(scores, np.array([6.0, 6.0, 12.0, 12.0]))
    assert grouped["mae_by_lead_time"].values[0, 0].tolist() == [2.0, 2.0]
    assert grouped["rmse_by_lead_time"].values[0, 0, 0] == pytest.approx(np.sqrt(5.0))


def test_ensembles_without_forecast_coordinates_are_not_grouped(tmp_path):
    ens, truth, _ = fx.write_case(tmp_path, times=3, members=2, shape=(6, 6))
    with xr.open_dataset(ens) as ds:
        assert lead_hours(ds) is None
    result = evaluate(ens, truth, distributions=False)
    result.evaluation.close()
    assert "crps_by_lead_time" not in result.scores


def test_score_command_prints_skill_by_lead_time_and_writes_it(tmp_path):
    from corrdiff.cli.main import app

    ens, truth = forecast_case(tmp_path)
    out = tmp_path / "scores.nc"
    result = CliRunner().invoke(app, ["score", str(ens), "--truth", str(truth), "--spectra", "none", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "CRPS by lead time" in result.output and "12 h" in result.output
    with xr.open_dataset(out) as ds:
        np.testing.assert_allclose(ds["mae_by_lead_time"].sel(model="corrdiff", variable="t2m"),
                                   [OFFSET[h] for h in STEPS_H], rtol=1e-4)
