"""Spectra and distributions against known answers: Parseval, a power law's slope, wavelengths in km."""

import numpy as np
import pytest
import xarray as xr

from corrdiff.evaluation import collect, compare_distributions, isotropic_power
from corrdiff.evaluation.spectra import (quantile_from_histogram, radial_bins, row_power, smallest_octave_power_ratio,
                                         spectrum, wasserstein_from_histograms, wavenumbers)
from tests.evaluation import evaluation_fixtures as fx


def power_law_field(shape, beta, spacing_km, rng):
    """A periodic random field whose isotropic (ring-summed) spectrum goes as k^-beta.

    Ring sums gather ~k modes, so each mode's power goes as k^-(beta + 1), its amplitude as k^-(beta + 1)/2.
    """
    ky = np.fft.fftfreq(shape[0], d=spacing_km)[:, None]
    kx = np.fft.fftfreq(shape[1], d=spacing_km)[None, :]
    k = np.hypot(ky, kx)
    amplitude = np.where(k > 0, k, np.inf) ** (-(beta + 1) / 2)
    noise = np.fft.fft2(rng.normal(size=shape))
    return np.real(np.fft.ifft2(noise * amplitude))


def fitted_slope(power, wavenumber, spacing_km, lowest_bin=4):
    """Least-squares slope of log power against log k between bin `lowest_bin` and half the Nyquist."""
    use = (np.arange(wavenumber.size) >= lowest_bin) & (wavenumber <= 0.25 / spacing_km)
    return np.polyfit(np.log(wavenumber[use]), np.log(power[use]), 1)[0]


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (33, 50)])
def test_parseval_total_power_is_the_variance(shape):
    field = np.random.default_rng(0).normal(3.0, 2.0, shape)
    power = isotropic_power(field, spacing_km=2.0, window=None)
    np.testing.assert_allclose(power.sum(), field.var(), rtol=1e-10)
    # the Hann window is normalised so that white noise keeps its variance
    hann = isotropic_power(np.random.default_rng(1).normal(0, 2.0, (20, *shape)), 2.0, "hann").sum(axis=-1)
    np.testing.assert_allclose(hann.mean(), 4.0, rtol=0.05)


@pytest.mark.parametrize("beta", [2.0, 3.0])
@pytest.mark.parametrize("window", [None, "hann"])
def test_power_law_slope_is_recovered(beta, window):
    spacing = 2.0
    rng = np.random.default_rng(int(beta * 10))
    fields = np.stack([power_law_field((128, 128), beta, spacing, rng) for _ in range(8)])
    power = isotropic_power(fields, spacing, window).mean(axis=0)
    _, _, wavenumber = radial_bins((128, 128), spacing)
    assert abs(fitted_slope(power, wavenumber, spacing) + beta) < 0.1


def test_wavelength_axis_is_in_km_from_the_grid_spacing():
    spacing, wavelength = 2.5, 40.0  # km: 16 grid points per wave on a 160-point domain
    x = np.arange(160) * spacing
    wave = xr.DataArray(np.sin(2 * np.pi * x / wavelength)[None, :].repeat(96, 0), dims=("y", "x"),
                        attrs={"units": "K"})
    result = spectrum(wave, spacing, window=None)
    peak = int(result.argmax("wavenumber"))
    np.testing.assert_allclose(float(result["wavelength"][peak]), wavelength, rtol=0.05)
    assert result["wavelength"].attrs["units"] == "km" and result.attrs["units"] == "(K)2"
    np.testing.assert_allclose(float(result.sum()), 0.5, rtol=1e-6)  # variance of a unit sine


def test_summary_numbers_of_simple_distributions():
    edges = np.linspace(0, 10, 1001)
    centres = 0.5 * (edges[1:] + edges[:-1])
    counts = np.exp(-0.5 * ((centres - 4) / 0.7) ** 2)
    shifted = np.exp(-0.5 * ((centres - 4.5) / 0.7) ** 2)
    np.testing.assert_allclose(wasserstein_from_histograms(edges, shifted, counts), 0.5, atol=0.01)
    np.testing.assert_allclose(quantile_from_histogram(edges, counts, 0.999), 4 + 3.090 * 0.7, atol=0.02)
    wavenumber = np.arange(33) / 64.0
    power = np.ones(33)
    assert smallest_octave_power_ratio(0.5 * power, power, wavenumber, spacing_km=1.0) == pytest.approx(0.5)


def test_compare_distributions_of_a_calibrated_case(tmp_path):
    ens, truth, _ = fx.write_case(tmp_path, times=6, members=4, shape=(32, 32))
    spectra, histograms, summary = compare_distributions(collect(ens, truth), max_times=4)
    assert spectra["u"].dims == ("source", "member", "wavenumber")
    assert list(spectra["source"].values) == ["truth", "corrdiff", "regression"]
    assert np.isnan(spectra["u"].sel(source="truth").values[1:]).all()  # truth has one member
    assert histograms["u"].sel(source="corrdiff").sum() == 4 * 4 * 32 * 32
    # members are truth-like: small-scale power within a few percent; the mean field lacks the noise's power
    ratio = summary["power_ratio_smallest_octave"]
    np.testing.assert_allclose(ratio.sel(model="corrdiff").values, 1.0, atol=0.08)
    assert (ratio.sel(model="regression") < ratio.sel(model="corrdiff")).all()
    assert (summary["wasserstein"].sel(model="corrdiff") < summary["wasserstein"].sel(model="regression")).all()
    assert summary.attrs["summary_times"] == 4


def test_histogram_range_from_the_scores_gives_the_same_summary(tmp_path):
    from corrdiff.evaluation import score_models

    ens, truth, arrays = fx.write_case(tmp_path, times=4, members=3, shape=(16, 16))
    evaluation = collect(ens, truth)
    scores = score_models(evaluation)
    np.testing.assert_allclose(scores["truth_max"].sel(variable="u"), arrays["truth"]["u"].max(), rtol=1e-6)
    np.testing.assert_allclose(scores["forecast_min"].sel(model="corrdiff", variable="v"),
                               arrays["ensemble"]["v"].min(), rtol=1e-6)
    separate = compare_distributions(evaluation, max_times=0)
    shared = compare_distributions(evaluation, max_times=0, scores=scores)
    xr.testing.assert_allclose(separate.summary, shared.summary)
    xr.testing.assert_allclose(separate.histograms, shared.histograms)


@pytest.mark.parametrize("nx", [64, 51])
def test_1d_spectra_parseval_the_rows_variance_and_the_wavelength_of_a_wave(nx):
    """1-D: each row's power sums to that row's variance; a wave along x peaks at its wavelength in km."""
    rows = np.random.default_rng(0).normal(3.0, 2.0, (9, nx))
    np.testing.assert_allclose(row_power(rows, 2.0).sum(), rows.var(axis=1).mean(), rtol=1e-10)
    spacing, wavelength = 2.0, 16.0
    x = np.arange(nx) * spacing
    wave = xr.DataArray(np.cos(2 * np.pi * x / wavelength)[None, :].repeat(5, 0), dims=("y", "x"))
    result = spectrum(wave, spacing, kind="1d")
    assert result.sizes["wavenumber"] == nx // 2 + 1
    np.testing.assert_allclose(float(result["wavelength"][int(result.argmax("wavenumber"))]), wavelength, rtol=0.1)
    np.testing.assert_allclose(wavenumbers((5, nx), spacing, "1d"), np.fft.rfftfreq(nx, spacing))


def test_1d_spectra_leave_out_nan_and_inf_like_the_2d_ones():
    field = np.random.default_rng(2).normal(size=(6, 32))
    holed = field.copy()
    holed[2, 3], holed[4, 7] = np.nan, np.inf
    assert np.isfinite(row_power(holed, 1.0)).all() and np.isfinite(isotropic_power(holed, 1.0)).all()


def test_compare_distributions_says_which_spectra_it_computed(tmp_path):
    ens, truth, _ = fx.write_case(tmp_path, times=3, members=2, shape=(12, 16))
    evaluation = collect(ens, truth)
    try:
        found = compare_distributions(evaluation, kind="1d")
    finally:
        evaluation.close()
    assert found.spectra.attrs["spectra"] == "1d" and found.spectra.sizes["wavenumber"] == 16 // 2 + 1
    assert found.summary.attrs["spectra"] == "1d" and "along x" in found.summary.attrs["spectra_method"]
    assert np.isfinite(found.summary["power_ratio_smallest_octave"].sel(model="corrdiff")).all()
