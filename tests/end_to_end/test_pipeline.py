"""From files to ensemble through the command line: data spec → train both steps → generate (also from a
new coarse forecast with no targets)."""

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff.cli import app
from tests.data import fixtures

STEPS = ["--set", "regression.steps=4", "--set", "diffusion.steps=4"]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    spec = fixtures.write_generic(folder / "data")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": "data/spec.yaml", "run_dir": "run",
        "model": {"preset": "tiny", "model_channels": 8, "attn_resolutions": []},
        "regression": {"batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
        "diffusion": {"batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
        "sampler": {"num_steps": 3},
        "generate": {"members": 2},
    }))
    invoke("train", "regression", config, "--quiet", *STEPS)
    invoke("train", "diffusion", config, "--quiet", *STEPS)
    return folder, spec, config


def test_generate_for_the_test_split_writes_the_spec_grid_names_and_units(trained):
    folder, spec, config = trained
    out = folder / "test.nc"
    invoke("generate", config, "--out", out, "--quiet")
    truth = fixtures.fine_dataset()
    with xr.open_dataset(out) as ds:
        assert list(ds["time"].values) == list(truth.time.values[9:])  # the test split
        assert ds["t2m"].dims == ("time", "member", "y", "x") and ds.sizes["member"] == 2
        np.testing.assert_allclose(ds["lat"].values, truth["XLAT"].values)
        assert ds["refl"].attrs["units"] == "dBZ" and ds["u10"].attrs["long_name"] == "10 m eastward wind"
        assert np.isfinite(ds["t2m"].values).all()
        # Denormalised back to physical units: temperatures near the truth's, not near 0.
        assert abs(float(ds["t2m"].mean()) - float(truth["t2m"].mean())) < 50


def test_generate_from_a_new_coarse_forecast_without_targets(trained):
    folder, spec, config = trained
    coarse = fixtures.coarse_dataset()
    forecast = coarse.isel(time=slice(0, 3)).assign_coords(time=coarse.time[:3] + np.timedelta64(400, "D"))
    forecast.to_netcdf(folder / "forecast.nc")
    out = folder / "forecast-ens.nc"
    invoke("generate", config, "--input", folder / "forecast.nc", "--out", out, "--quiet")
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds["time"].values, forecast["time"].values)
        assert bool(ds["generation_complete"].all())
