"""The log-spectral distance against known answers: identical spectra give 0, a field scaled by a gives
2·log10(a) at every wavenumber and so exactly that mean; through `compare_distributions`, `corrdiff score`'s
scores.nc and its table."""

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from corrdiff.cli import app
from corrdiff.evaluation import collect, compare_distributions, isotropic_power
from corrdiff.evaluation.spectra import log_spectral_distance, wavenumbers
from corrdiff.evaluation.tables import rows, text_table
from tests.evaluation import evaluation_fixtures as fx


@pytest.mark.parametrize("window", [None, "hann"])
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_identical_spectra_are_0_and_a_scaled_field_is_2_log10_a(window, scale):
    spacing = 2.0
    field = np.random.default_rng(0).normal(size=(24, 40))
    wavenumber = wavenumbers(field.shape, spacing)
    power = isotropic_power(field, spacing, window)
    assert log_spectral_distance(power, power, wavenumber, spacing) == 0.0
    scaled = isotropic_power(scale * field, spacing, window)
    assert log_spectral_distance(scaled, power, wavenumber, spacing) == pytest.approx(2 * abs(np.log10(scale)),
                                                                                       rel=1e-12)


def test_bins_beyond_nyquist_and_empty_bins_are_left_out():
    wavenumber = np.arange(8) / 10.0  # spacing 1: Nyquist 0.5, so bins 1..5 count
    true = np.ones(8)
    power = np.ones(8)
    power[6:] = 1e6  # corner bins: ignored
    power[0] = 1e6  # the mean's bin: ignored
    power[2] = 10.0  # one decade off in one of five bins
    assert log_spectral_distance(power, true, wavenumber, 1.0) == pytest.approx(0.2)
    true[3] = 0.0  # no true power: the bin is left out
    assert log_spectral_distance(power, true, wavenumber, 1.0) == pytest.approx(0.25)
    assert np.isnan(log_spectral_distance(np.zeros(8), true, wavenumber, 1.0))


def scaled_case(folder, scale, members=3):
    """Truth, and an ensemble whose every member is `scale` × truth: member spectra averaged = scale² × truth's."""
    truth, _, regression = fx.case(times=3, members=members, shape=(16, 16), variables=("u", "v"))
    ensemble = {n: np.repeat(scale * a[:, None], members, axis=1) for n, a in truth.items()}
    return fx.write_ensemble(folder / "ens.nc", ensemble, regression), fx.write_truth(folder / "truth.nc", truth)


def test_compare_distributions_gives_2_log10_a_for_scaled_members(tmp_path):
    ens, truth = scaled_case(tmp_path, 2.0)
    summary = compare_distributions(collect(ens, truth), max_times=0).summary
    lsd = summary["log_spectral_distance"]
    np.testing.assert_allclose(lsd.sel(model="corrdiff").values, 2 * np.log10(2.0), rtol=1e-5)
    assert (lsd.sel(model="regression") > 0).all()
    assert lsd.attrs["units"] == "1" and "log10" in lsd.attrs["long_name"]


def test_score_writes_and_prints_the_distance(tmp_path):
    ens, truth = scaled_case(tmp_path, 0.1)
    out = tmp_path / "scores.nc"
    result = CliRunner().invoke(app, ["score", str(ens), "--truth", str(truth), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as scores:
        lsd = scores["log_spectral_distance"]
        assert lsd.dims == ("model", "variable") and lsd.attrs["units"] == "1"
        np.testing.assert_allclose(lsd.sel(model="corrdiff").values, 2.0, rtol=1e-5)  # 2·|log10 0.1|
        header, body = rows(scores)
        table = text_table(scores, width=120)
    assert "LSD" in table and "LSD" in result.output
    lsd_cells = [row[header.index("LSD")] for row in body if row[1] == "corrdiff"]
    assert lsd_cells == ["2", "2"]  # u and v, 4 significant digits
