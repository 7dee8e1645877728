"""The Python API: `corrdiff.load(run).downscale(xarray)` is `corrdiff generate` in memory, bit for bit."""

import numpy as np
import pytest
import xarray as xr

import corrdiff
from corrdiff.errors import CheckpointError, ConfigError, DataError
from tests.api_fixtures import FIELDS, TIMES, trained, model  # noqa: F401  (fixtures)
from tests.cli_runner import invoke, succeeded

# Attributes that name how a result was made (its command, the input files, hence the fingerprint) differ by design.
MADE_HOW = {"history", "corrdiff_fingerprint", "corrdiff_fingerprint_ingredients", "corrdiff_input_files",
            "corrdiff_dataset_spec", "corrdiff_input_hashes"}


@pytest.fixture(scope="module")
def forecast(trained):
    return xr.open_dataset(trained[0] / "data" / "coarse.nc")


@pytest.fixture(scope="module")
def from_file(trained):
    """`corrdiff generate` of the coarse file at two times (2 members, 2 sampler steps: the run config's)."""
    folder, config = trained
    out = folder / "cli.nc"
    succeeded(invoke("generate", config, "--out", out, "--input", folder / "data" / "coarse.nc", "--quiet",
                     "--times", TIMES[0], "--times", TIMES[1]))
    with xr.open_dataset(out) as ds:
        return ds.load()


def test_downscale_on_xarray_equals_generate_on_the_same_file_bit_for_bit(model, forecast, from_file):
    ens = model.downscale(forecast, members=2, seed=0, times=TIMES)
    for name in FIELDS:
        np.testing.assert_array_equal(ens[name].values, from_file[name].values, err_msg=name)
        assert ens[name].dims == from_file[name].dims
        # xarray moves `coordinates` into the encoding when it reads a file
        assert {k: v for k, v in ens[name].attrs.items() if k != "coordinates"} == from_file[name].attrs
    for coord in ("time", "member", "lat", "lon"):
        np.testing.assert_array_equal(ens[coord].values, from_file[coord].values)
    assert ens["generation_complete"].values.tolist() == [1, 1]
    shared = set(from_file.attrs) - MADE_HOW
    assert shared <= set(ens.attrs), shared - set(ens.attrs)
    assert {k: str(ens.attrs[k]) for k in shared} == {k: str(from_file.attrs[k]) for k in shared}


def test_the_regression_alone_is_the_ensembles_regression_mean(model, forecast, from_file):
    mean = model.regression(forecast, times=TIMES)
    assert set(mean.data_vars) == {f"{c}_regression" for c in ("t2m", "u10", "refl")}
    for name in mean.data_vars:
        assert mean[name].dims == ("time", "y", "x")
        np.testing.assert_array_equal(mean[name].values, from_file[name].values)


def test_inputs_are_read_by_the_spec_rules_whatever_their_layout(model, forecast):
    """A CDS-style `valid_time` axis holds the same fields: the same ensemble; so does an ascending latitude, up to
    the round-off of interpolation weights summed in another order."""
    reference = model.downscale(forecast, members=2, times=TIMES[:1])
    renamed = model.downscale(forecast.rename(time="valid_time"), members=2, times=TIMES[:1])
    flipped = model.downscale(forecast.isel(latitude=slice(None, None, -1)), members=2, times=TIMES[:1])
    for name in FIELDS:
        np.testing.assert_array_equal(renamed[name].values, reference[name].values)
        np.testing.assert_allclose(flipped[name].values, reference[name].values, rtol=1e-5, atol=1e-3)


def test_a_member_depends_on_seed_time_and_index_only(model, forecast):
    """Three members start with the two of a two-member run; another seed gives other members."""
    two = model.downscale(forecast, members=2, times=TIMES[1:])
    three = model.downscale(forecast, members=3, times=TIMES[1:])
    np.testing.assert_allclose(three["t2m"].values[:, :2], two["t2m"].values, rtol=1e-5, atol=1e-4)
    other = model.downscale(forecast, members=2, seed=1, times=TIMES[1:])
    assert not np.allclose(other["t2m"].values, two["t2m"].values)
    np.testing.assert_array_equal(other["t2m_regression"].values, two["t2m_regression"].values)
    assert other.attrs["corrdiff_seed"] == 1 and three.attrs["corrdiff_members"] == 3


def test_a_sampler_given_as_a_dict_is_used_and_recorded(model, forecast):
    ens = model.downscale(forecast, members=2, sampler={"num_steps": 3}, times=TIMES[:1])
    assert ens.attrs["sampler_num_steps"] == "3"
    default = model.downscale(forecast, members=2, times=TIMES[:1])
    assert default.attrs["sampler_num_steps"] == "2"  # the run config's
    assert not np.array_equal(ens["t2m"].values, default["t2m"].values)


def test_physicsnemos_arithmetic_is_checked_by_the_sampler_dict(model, forecast):
    """The run's denoiser learnt the normalised residual (residual_normalization), which PhysicsNeMo cannot sample:
    nothing to reproduce (tests/interop/test_physicsnemo_parity.py reproduces PhysicsNeMo on its own networks)."""
    with pytest.raises(ConfigError, match=r"sampler: arithmetic must be one of \['edm', 'physicsnemo'\]"):
        model.downscale(forecast, members=2, sampler={"arithmetic": "nvidia"}, times=TIMES[:1])
    with pytest.raises(ConfigError, match="sampler.arithmetic: physicsnemo reproduces PhysicsNeMo's CorrDiff, which "
                                          "cannot run .*residual divided by its standard deviation"):
        model.downscale(forecast, members=2, sampler={"arithmetic": "physicsnemo"}, times=TIMES[:1])


def test_a_missing_variable_is_a_data_error_naming_it(model, forecast):
    with pytest.raises(DataError, match="'u10' not found"):
        model.downscale(forecast.drop_vars("u10"), members=2)


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="neither a model package"):
        corrdiff.load(tmp_path)


def test_a_nan_input_is_refused_naming_channel_and_time(model, forecast):
    broken = forecast.copy(deep=True)
    broken["t2m"][forecast.indexes["time"].get_loc(TIMES[1])] = np.nan
    with pytest.raises(DataError, match=r"input 't2m' at 2021-01-02T06:00:00: .*NaN"):
        model.downscale(broken, members=2, times=TIMES)
    # Times without NaN are downscaled as before.
    assert model.downscale(broken, members=2, times=TIMES[:1])["t2m"].notnull().all()
