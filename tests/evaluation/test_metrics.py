"""Point scores against known answers: CRPS identities and closed forms, calibration, chunking invariance."""

from pathlib import Path

import numpy as np
import pytest
import scoringrules
import xarray as xr
from scipy import stats

from corrdiff.evaluation import collect, crps_ensemble, score_models
from corrdiff.evaluation import metrics, stores
from tests.evaluation import evaluation_fixtures as fx


def gaussian_crps(mu, sigma, y):
    """Closed-form CRPS of N(mu, sigma²) at y (Gneiting & Raftery 2007)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def test_crps_of_one_member_is_the_absolute_error():
    rng = np.random.default_rng(0)
    forecast, obs = rng.normal(size=(1, 7, 5)), rng.normal(size=(7, 5))
    np.testing.assert_allclose(crps_ensemble(obs, forecast), np.abs(forecast[0] - obs), rtol=1e-12)


def test_crps_of_a_large_gaussian_ensemble_matches_the_closed_form():
    rng = np.random.default_rng(1)
    points, members = 64, 20_000
    mu, sigma = rng.normal(size=points), rng.uniform(0.5, 2.0, points)
    obs = mu + sigma * rng.normal(size=points) * 1.5
    ensemble = mu + sigma * rng.normal(size=(members, points))
    # the empirical CRPS exceeds the closed form by sigma / (sqrt(pi) M) on average; sampling noise ~ sigma / sqrt(M)
    np.testing.assert_allclose(crps_ensemble(obs, ensemble), gaussian_crps(mu, sigma, obs), rtol=0.03, atol=0.02)
    assert abs(crps_ensemble(obs, ensemble).mean() / gaussian_crps(mu, sigma, obs).mean() - 1) < 0.01


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("members", [2, 5, 32])
def test_sorted_crps_equals_scoringrules(dtype, members):
    rng = np.random.default_rng(members)
    ensemble = (280 + rng.normal(size=(members, 9, 11))).astype(dtype)  # far from 0, as temperatures in K
    obs = (280 + rng.normal(size=(9, 11))).astype(dtype)
    ensemble[1, 2, 3] = obs[2, 3]  # a tie
    reference = np.asarray(scoringrules.crps_ensemble(obs, ensemble, m_axis=0))
    tolerance = 1e-12 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(crps_ensemble(obs, ensemble), reference, rtol=tolerance, atol=tolerance)
    moved = np.moveaxis(ensemble, 0, -1)
    np.testing.assert_allclose(crps_ensemble(obs, moved, member_axis=-1), reference, rtol=tolerance, atol=tolerance)
    sums = metrics.field_sums(ensemble, obs, np.random.default_rng(0), crps="sorted")
    sums_reference = metrics.field_sums(ensemble, obs, np.random.default_rng(0), crps="scoringrules")
    np.testing.assert_allclose(sums, sums_reference, rtol=1e-5)


@pytest.mark.parametrize("members", [2, 3, 8, 32])
def test_fair_crps_equals_scoringrules_fair_estimator(members):
    rng = np.random.default_rng(members)
    ensemble = 280 + rng.normal(size=(members, 9, 11))
    obs = 280 + rng.normal(size=(9, 11))
    reference = np.asarray(scoringrules.crps_ensemble(obs, ensemble, m_axis=0, estimator="fair"))
    np.testing.assert_allclose(metrics.crps_fair(obs, ensemble), reference, rtol=1e-10, atol=1e-10)
    sums = metrics.field_sums(ensemble, obs, np.random.default_rng(0))
    assert sums[metrics.SUMS.index("crps_fair")] == pytest.approx(reference.sum(), rel=1e-10)


def test_fair_crps_is_the_usual_crps_plus_the_finite_ensemble_term():
    # usual − fair = ½ΣΣ|x_i − x_j| · (1/(M(M − 1)) − 1/M²), the pair term with and without i = j
    rng = np.random.default_rng(5)
    m = 6
    ensemble, obs = rng.normal(size=(m, 40)), rng.normal(size=40)
    pair_sum = np.abs(ensemble[:, None] - ensemble[None]).sum(axis=(0, 1))
    difference = 0.5 * pair_sum * (1 / (m * (m - 1)) - 1 / m**2)
    np.testing.assert_allclose(crps_ensemble(obs, ensemble) - metrics.crps_fair(obs, ensemble), difference,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("members", [4, 8, 16])
def test_fair_crps_is_lowest_at_the_calibrated_spread_and_the_usual_one_below_it(members):
    # truth ~ N(0, 1), members ~ N(0, s²) drawn from one set of normals (common random numbers: a smooth
    # curve in s). The fair CRPS's expectation is the CRPS of N(0, s²), lowest at s = 1 for every M; the
    # usual one is lowest below 1 (about 0.65, 0.8 and 0.9 of it at M = 4, 8, 16).
    rng = np.random.default_rng(members)
    points = 400_000 // members
    obs = rng.normal(size=points)
    draws = rng.normal(size=(members, points))
    ratios = np.round(np.arange(0.5, 1.5001, 0.01), 2)
    fair = [metrics.crps_fair(obs, s * draws).mean() for s in ratios]
    usual = [crps_ensemble(obs, s * draws).mean() for s in ratios]
    assert abs(ratios[int(np.argmin(fair))] - 1.0) <= 0.02
    assert ratios[int(np.argmin(usual))] == pytest.approx({4: 0.65, 8: 0.8, 16: 0.9}[members], abs=0.04)


def test_fair_crps_of_one_member_is_undefined():
    assert np.isnan(metrics.crps_fair(np.zeros(3), np.ones((1, 3)))).all()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    ens, truth, arrays = fx.write_case(folder, times=8, members=9, shape=(32, 32), sigma=0.5)
    return ens, truth, arrays, score_models(collect(ens, truth))


def test_calibrated_ensemble_has_spread_skill_one_and_flat_rank_histogram(calibrated):
    *_, scores = calibrated
    corrdiff = scores.sel(model="corrdiff")
    np.testing.assert_allclose(corrdiff["spread_skill"].values, 1.0, atol=0.03)
    for v in scores["variable"].values:
        counts = corrdiff["rank_histogram"].sel(variable=v).values
        assert counts.sum() == 8 * 32 * 32
        assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_overconfident_ensemble_is_flagged(tmp_path):
    truth, ensemble, _ = fx.case(times=4, members=9, shape=(32, 32), sigma=0.5)
    narrow = {n: (truth[n][:, None] * 0 + ensemble[n].mean(axis=1, keepdims=True)
                  + 0.3 * (ensemble[n] - ensemble[n].mean(axis=1, keepdims=True))) for n in ensemble}
    scores = score_models(collect(fx.write_ensemble(tmp_path / "e.nc", narrow), fx.write_truth(tmp_path / "t.nc", truth)))
    assert (scores["spread_skill"].sel(model="corrdiff").values < 0.5).all()
    counts = scores["rank_histogram"].sel(model="corrdiff", variable="u").values
    assert counts[0] > 3 * counts[4] and counts[-1] > 3 * counts[4]  # U-shaped


def test_scores_match_direct_numpy_and_regression_crps_is_its_mae(calibrated):
    *_, arrays, scores = calibrated
    for v in ("u", "vorticity"):
        error = arrays["ensemble"][v].astype(np.float64).mean(axis=1) - arrays["truth"][v]
        row = scores.sel(model="corrdiff", variable=v)
        np.testing.assert_allclose(row["mae"], np.abs(error).mean(), rtol=1e-5)
        np.testing.assert_allclose(row["rmse"], np.sqrt((error**2).mean()), rtol=1e-5)
        np.testing.assert_allclose(row["bias"], error.mean(), rtol=1e-3, atol=1e-6 * np.abs(error).mean())
        crps = crps_ensemble(arrays["truth"][v].astype(np.float64), np.moveaxis(arrays["ensemble"][v], 1, 0))
        np.testing.assert_allclose(row["crps"], crps.mean(), rtol=1e-5)
        np.testing.assert_allclose(row["mae_by_time"], np.abs(error).mean(axis=(1, 2)), rtol=1e-5)
        regression = scores.sel(model="regression", variable=v)
        np.testing.assert_allclose(regression["crps"], regression["mae"], rtol=1e-6)
        assert np.isnan(regression["spread_skill"])
    assert list(scores["model"].values) == ["corrdiff", "regression"]
    assert scores["mae"].attrs["units"] and scores.coords["units"].sel(variable="u") == "m s-1"


def test_scores_do_not_depend_on_chunking_and_skip_missing_pixels(calibrated, monkeypatch):
    ens, truth, arrays, scores = calibrated
    monkeypatch.setattr(stores, "CHUNK_BYTES", 1)  # one time per chunk
    rechunked = score_models(collect(ens, truth))
    xr.testing.assert_allclose(rechunked, scores)
    holes = {n: a.copy() for n, a in arrays["truth"].items()}
    holes["u"][0, :4] = np.nan  # 4 rows of 32 pixels missing at the first time
    truth_with_holes = fx.write_truth(Path(truth).with_name("holes.nc"), holes)
    scored = score_models(collect(ens, truth_with_holes))
    assert int(scored["count"].sel(model="corrdiff", variable="u")) == 8 * 32 * 32 - 4 * 32
    assert np.isfinite(scored["crps"]).sel(model="corrdiff").all()
