"""Scores of time with known answers: AR(1) series of known ρ (lag k gives ρ^k), members independent in time
(0), a forecast equal to truth (no ramp distance), ramps scaled by a known factor, a gap that splits a series,
straight and zig-zag vortex tracks; and `corrdiff score`, `report` and `case` with and without consecutive times."""

import logging

import numpy as np
import pytest
import xarray as xr

from corrdiff.evaluation import cases, collect, evaluate
from corrdiff.evaluation.scores import FROM_SERIES, named
from corrdiff.evaluation.time_scores import (ANOMALY, correlation, pair_sums, REGRESSION, score_in_time, series_of,
                                             track_smoothness)
from tests.evaluation import evaluation_fixtures as fx
from tests.evaluation.test_cases import invoke as invoke_case, rankine, vortex_fields
from tests.evaluation.test_cli import invoke

SHAPE = (16, 16)
RHO = 0.7


def ar1(rng, times: int, members: int, rho: float = RHO, shape=SHAPE) -> np.ndarray:
    """(time, member, y, x) of unit variance, each point an AR(1) series of lag-1 correlation rho."""
    x = np.empty((times, members, *shape))
    x[0] = rng.normal(size=(members, *shape))
    for t in range(1, times):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=(members, *shape))
    return x.astype(np.float32)


def write(folder, truth, ensemble, regression=True, times=None, baselines=None):
    """Files of truth (time, y, x), the ensemble (time, member, y, x), a zero regression mean (or none) and
    baselines {name: (time, member, y, x)}; the Evaluation of them."""
    zero = {"u": np.zeros_like(truth)} if regression else None
    ens = fx.write_ensemble(folder / "ens.nc", {"u": ensemble}, zero, times=times)
    truth_path = fx.write_truth(folder / "truth.nc", {"u": truth}, times=times)
    named_files = {name: fx.write_ensemble(folder / f"{name}.nc", {"u": values}, times=times)
                   for name, values in (baselines or {}).items()}
    return collect(ens, truth_path, named_files)


def test_series_are_runs_of_one_step_and_a_gap_or_a_new_forecast_splits_them():
    hours = np.array([0, 6, 12, 18, 42, 48, 54])
    times = np.datetime64("2022-07-01", "ns") + hours * np.timedelta64(3600, "s")
    series = series_of(times)
    assert series.step == np.timedelta64(6 * 3600, "s") and list(series.index) == [0, 0, 0, 0, 1, 1, 1]
    assert list(series.pairs(1)) == [0, 1, 2, 4, 5] and list(series.pairs(3)) == [0]  # never across the gap
    assert series.counted == 2 and series.describe() == "2 series of consecutive times 6 h apart, 5 pairs"
    reference = np.array([0, 0, 1, 1, 2, 2, 2])  # forecasts: a new reference time starts a new series
    assert list(series_of(times, reference).pairs(1)) == [0, 2, 4, 5]
    assert series_of(times[:1]).pairs(1).size == 0 and series_of(times[:1]).step is None


def test_ar1_series_give_rho_to_the_lag_and_independent_members_zero(tmp_path):
    rng = np.random.default_rng(0)
    truth = ar1(rng, 24, 1)[:, 0]
    evaluation = write(tmp_path, truth, ar1(rng, 24, 3), baselines={"noise": rng.normal(size=(24, 2, *SHAPE))})
    scores = score_in_time(evaluation, max_pairs=4)
    evaluation.close()
    assert set(scores.data_vars) == set(named(FROM_SERIES)) | {f"truth_{n}" for n in named(FROM_SERIES)
                                                               if n.startswith("residual") or n == "ramp_std"}
    assert scores.attrs["time_residual"] == REGRESSION and scores.attrs["time_pairs"] == 23
    for lag in (1, 2, 3):  # 256 points × (24 − lag) pairs: sampling error ~0.01
        name = f"residual_autocorrelation_lag{lag}"
        assert abs(float(scores[f"truth_{name}"].sel(variable="u")) - RHO**lag) < 0.05
        assert abs(float(scores[name].sel(model="corrdiff", variable="u")) - RHO**lag) < 0.05
        assert abs(float(scores[name].sel(model="noise", variable="u"))) < 0.05
    assert np.isnan(scores["residual_autocorrelation_lag1"].sel(model="regression", variable="u"))  # residual 0
    ramp_std = float(scores["truth_ramp_std"].sel(variable="u"))  # Var(x(t+1) − x(t)) = 2(1 − ρ)
    assert ramp_std == pytest.approx(np.sqrt(2 * (1 - RHO)), rel=0.05)
    assert float(scores["ramp_std"].sel(model="noise", variable="u")) == pytest.approx(np.sqrt(2), rel=0.05)


def test_without_a_regression_mean_the_residual_is_the_anomaly_about_each_points_mean(tmp_path):
    rng = np.random.default_rng(1)
    pattern = 10.0 * np.sin(np.arange(SHAPE[1]) / 3.0)[None, :]  # a climate per point, removed by the anomaly
    series = ar1(rng, 24, 1)[:, 0]
    evaluation = write(tmp_path, series + pattern, ar1(rng, 24, 2) + pattern, regression=False)
    scores = score_in_time(evaluation, distributions=False)
    evaluation.close()
    assert scores.attrs["time_residual"] == ANOMALY and "regression" not in scores["model"].values
    anomaly = (series + pattern).astype(np.float64)
    anomaly -= anomaly.mean(axis=0)
    expected = np.corrcoef(anomaly[:-1].ravel(), anomaly[1:].ravel())[0, 1]
    assert float(scores["truth_residual_autocorrelation_lag1"].sel(variable="u")) == pytest.approx(expected, abs=1e-5)
    # the anomaly of 24 times is biased low by about (1 + 3ρ)/24 (a series' own mean is removed), not by the climate
    assert abs(expected - (RHO - (1 + 3 * RHO) / 24)) < 0.06
    assert abs(float(scores["residual_autocorrelation_lag1"].sel(model="corrdiff", variable="u")) - expected) < 0.08
    assert "ramp_wasserstein" not in scores and "ramp_std" in scores  # distributions=False: no W1, no LSD


def test_a_forecast_equal_to_truth_has_no_ramp_distance_and_scaled_ramps_their_factor(tmp_path):
    rng = np.random.default_rng(2)
    truth = ar1(rng, 8, 1)[:, 0]
    factor = 2.0
    evaluation = write(tmp_path, truth, truth[:, None], baselines={"scaled": factor * truth[:, None]})
    scores = score_in_time(evaluation, max_pairs=0)
    evaluation.close()
    same = scores.sel(model="corrdiff", variable="u")
    assert float(same["ramp_wasserstein"]) == 0.0 and float(same["ramp_log_spectral_distance"]) == 0.0
    assert float(same["residual_autocorrelation_lag1"]) == pytest.approx(
        float(scores["truth_residual_autocorrelation_lag1"].sel(variable="u")), abs=1e-12)
    scaled = scores.sel(model="scaled", variable="u")
    assert float(scaled["ramp_std"]) / float(scores["truth_ramp_std"].sel(variable="u")) == pytest.approx(factor)
    assert float(scaled["ramp_log_spectral_distance"]) == pytest.approx(2 * np.log10(factor))  # power × factor²
    assert float(scaled["ramp_wasserstein"]) > 0


def test_a_gap_splits_the_series_the_lag1_is_that_of_the_two_halves_pooled(tmp_path):
    rng = np.random.default_rng(3)
    truth = ar1(rng, 12, 1)[:, 0]
    truth[6:] = -truth[6:] + 3.0  # the pair across the gap would be far from the others
    times = fx.time_axis(12)
    times[6:] += np.timedelta64(2, "D")
    evaluation = write(tmp_path, truth, truth[:, None], times=times)
    scores = score_in_time(evaluation, distributions=False)
    evaluation.close()
    halves = [truth[:6], truth[6:]]
    a = np.concatenate([h[:-1].ravel() for h in halves]).astype(np.float64)
    b = np.concatenate([h[1:].ravel() for h in halves]).astype(np.float64)
    expected = np.corrcoef(a, b)[0, 1]
    assert float(scores["truth_residual_autocorrelation_lag1"].sel(variable="u")) == pytest.approx(expected, abs=1e-6)
    sums = sum(pair_sums(h[:-1, None], h[1:, None]) for h in halves)  # the halves' sums, added
    assert float(correlation(sums)[0]) == pytest.approx(expected, abs=1e-6)
    assert scores.attrs["time_series"] == 2 and scores.attrs["time_pairs"] == 10


def test_a_straight_track_has_no_second_difference_and_a_zig_zag_four_times_its_offset():
    times = fx.time_axis(5)
    t = np.arange(5.0)
    offset_deg = 0.05
    lat = np.stack([23.0 + 0.1 * t, 23.0 + offset_deg * (-1.0) ** t], axis=1)  # (time, source)
    lon = np.stack([121.0 + 0.2 * t, 121.0 + 0.2 * t], axis=1)
    track = track_smoothness(lat, lon, times)
    second = track["track_second_difference_km"][0]
    assert second[0] == pytest.approx(0.0, abs=1e-9)
    assert second[1] == pytest.approx(4 * cases.EARTH_RADIUS_KM * np.deg2rad(offset_deg))
    east, north = cases.local_km(lat[1:, 0], lon[1:, 0], lat[:-1, 0], lon[:-1, 0])
    assert track["track_step_km"][0][0] == pytest.approx(np.mean(np.hypot(east, north)))
    assert track["track_step_km"][1]["units"] == "km"
    gap = times.copy()
    gap[3:] += np.timedelta64(1, "D")  # two series: one triple (0, 1, 2) and pairs 0-1, 1-2, 3-4
    second_with_gap = track_smoothness(lat, lon, gap)["track_second_difference_km"][0]
    assert second_with_gap[1] == pytest.approx(4 * cases.EARTH_RADIUS_KM * np.deg2rad(offset_deg))
    assert track_smoothness(lat[:1], lon[:1], times[:1]) == {}


@pytest.mark.parametrize("times", [4, 1], ids=["consecutive", "single time"])
def test_score_and_report_write_the_time_scores_or_leave_them_out(tmp_path, caplog, times):
    ens, truth, _ = fx.write_case(tmp_path, times=times, members=3, shape=(12, 12), variables=("u", "v"))
    with caplog.at_level(logging.INFO, logger="corrdiff"):
        result = invoke("score", ens, "--truth", truth, "--out", tmp_path / "scores.nc", "--spectra-times", 2)
    assert result.exit_code == 0, result.output
    absent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("no time scores")]
    with xr.open_dataset(tmp_path / "scores.nc") as scores:
        present = [n for n in named(FROM_SERIES) if n in scores]
        if times > 1:
            assert present == named(FROM_SERIES) and not absent
            assert scores["ramp_std"].attrs["units"] == "m s-1" and scores.attrs["time_step"] == "6 h"
            assert "scores over 4 times: time" in result.output and "ramp W1" in result.output
        else:
            assert present == [] and not any(n.startswith("truth_r") for n in scores.data_vars)
            assert len(absent) == 1 and "the 1 scored time has none" in absent[0]
            assert "ramp W1" not in result.output
    result = invoke("report", ens, "--truth", truth, "--out", tmp_path / "report", "--spectra-times", 2)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert ((tmp_path / "report" / "time_series.png").exists() and "time_series.png" in page) == (times > 1)
    assert ("<td>truth</td>" in page) == ("<dt>r(1)</dt>" in page) == ("Scores of time" in page) == (times > 1)


def test_case_command_measures_the_vortex_tracks_smoothness(tmp_path):
    centres = [(23.41, 121.13), (23.41, 121.33), (23.41, 121.53)]  # a straight track at constant speed
    truth, ensemble, regression = {"u": [], "v": []}, {"u": [], "v": []}, {"u": [], "v": []}
    for centre in centres:
        fields, _, _ = vortex_fields(rankine, centre, (32, 32))
        for n in truth:
            truth[n].append(fields[n])
            regression[n].append(0.8 * fields[n])
            ensemble[n].append([0.9 * fields[n], 1.1 * fields[n]])
    arrays = [{n: np.asarray(a[n], np.float32) for n in a} for a in (truth, ensemble, regression)]
    ens = fx.write_ensemble(tmp_path / "ens.nc", arrays[1], arrays[2])
    truth_path = fx.write_truth(tmp_path / "truth.nc", arrays[0])
    times = [str(t)[:16] for t in fx.time_axis(3)]
    out = tmp_path / "case"
    result = invoke_case(ens, "--truth", truth_path, *[a for t in times for a in ("--time", t)], "--vortex",
                         "--out", out)
    assert result.exit_code == 0, result.output
    assert "track over consecutive times 6 h apart" in result.output and "second difference" in result.output
    with xr.open_dataset(out / "case.nc") as ds:
        spacing = float(ds.attrs["grid_spacing_km"])
        step = cases.local_km(23.41, 121.33, 23.41, 121.13)[0]
        assert ds["track_step_km"].dims == ("source",) and ds.attrs["track_step"] == "6 h"
        np.testing.assert_allclose(ds["track_step_km"].values, step, atol=spacing / 2)
        assert np.all(ds["track_second_difference_km"].values < spacing / 2)


def test_a_series_start_the_generation_recorded_splits_the_series_like_a_gap(tmp_path):
    """Members that are time series restart where the file says (`series_start`): scored the same way."""
    rng = np.random.default_rng(3)
    truth = ar1(rng, 12, 1)[:, 0]
    gap = fx.time_axis(12)
    gap[6:] += np.timedelta64(2, "D")
    for folder in ("gap", "recorded"):
        (tmp_path / folder).mkdir()
    with_gap = write(tmp_path / "gap", truth, truth[:, None], times=gap)
    expected = score_in_time(with_gap, distributions=False)
    with_gap.close()
    recorded = tmp_path / "recorded"
    evaluation = write(recorded, truth, truth[:, None])
    evaluation.close()
    with xr.open_dataset(recorded / "ens.nc") as ds:
        ds = ds.load()
    starts = np.zeros(12, dtype="int8")
    starts[[0, 6]] = 1
    ds.assign_coords(series_start=("time", starts)).to_netcdf(recorded / "ens2.nc")
    evaluation = collect(recorded / "ens2.nc", recorded / "truth.nc")
    scores = score_in_time(evaluation, distributions=False)
    evaluation.close()
    assert scores.attrs["time_series"] == 2 and scores.attrs["time_pairs"] == 10
    name = "truth_residual_autocorrelation_lag1"
    assert float(scores[name].sel(variable="u")) == pytest.approx(float(expected[name].sel(variable="u")), abs=1e-6)


def test_the_python_entry_point_gives_what_score_writes(tmp_path):
    """`corrdiff.evaluation.evaluate` (docs/api.md) returns the scores of time that `corrdiff score` writes."""
    ens, truth, _ = fx.write_case(tmp_path, times=4, members=3, shape=(12, 12), variables=("u", "v"))
    scores = evaluate(ens, truth, spectra_times=2).scores
    assert invoke("score", ens, "--truth", truth, "--out", tmp_path / "scores.nc", "--spectra-times", 2).exit_code == 0
    with xr.open_dataset(tmp_path / "scores.nc") as written:
        for name in named(FROM_SERIES) + ["truth_residual_autocorrelation_lag1"]:
            np.testing.assert_allclose(scores[name].values, written[name].values, err_msg=name)
