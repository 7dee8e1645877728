"""The ensemble file's one owner: the template round-trips through both formats, and `open`/`validate`
name the file and the fault."""

import numpy as np
import pytest
import xarray as xr

from corrdiff import ensemble_file
from corrdiff.errors import EvaluationError
from tests.evaluation import evaluation_fixtures as fx


def layout(members=2, times=3, **options) -> xr.Dataset:
    lat, lon = fx.grid((4, 5))
    return ensemble_file.template(fx.time_axis(times), members, lat, lon, ["u"], {"u": fx.attrs_of("u")}, **options)


@pytest.mark.parametrize("fmt, name", [("netcdf", "e.nc"), ("zarr", "e.zarr")])
def test_template_round_trips_with_the_layout(tmp_path, fmt, name):
    path = ensemble_file.write(layout(), tmp_path / name, fmt)
    assert ensemble_file.format_of(path) == fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind
    with ensemble_file.open(path) as ds:
        ensemble_file.validate(ds, path)
        assert ds["u"].dims == ensemble_file.ENSEMBLE_DIMS and ds["u_regression"].dims == ensemble_file.FIELD_DIMS
        assert ds["u"].attrs["units"] == "m s-1" and ds["lat"].dims == ("y", "x")
        assert ds[ensemble_file.FLAG].attrs["flag_meanings"] == "pending written"
        assert ds.attrs["Conventions"] == ensemble_file.CONVENTIONS and ds.attrs["grid_spacing_km"] > 0
        assert ds["time"].encoding["units"].startswith("hours since 1970-01-01")
        np.testing.assert_array_equal(ds["time"].values, fx.time_axis(3))
        assert ensemble_file.complete_times(ds).sizes["time"] == 0  # nothing written yet


def test_a_complete_one_member_file_keeps_every_time(tmp_path):
    ds = layout(members=1, regression=False, complete=True, command="corrdiff baseline")
    assert "u_regression" not in ds and ds.attrs["history"].endswith("corrdiff baseline")
    complete = ensemble_file.complete_times(ds)
    assert complete.sizes["time"] == 3 and ensemble_file.FLAG not in complete


@pytest.mark.parametrize("fault, expected", [
    ("regression", "'u_regression' has dims"), ("flag", "'generation_complete' has dims"),
    ("lat", "lat has dims"), ("no_member", "no variable with dims"),
])
def test_validate_names_the_file_and_the_fault(fault, expected):
    ds = layout()
    if fault == "regression":
        ds["u_regression"] = ds["u"].isel(time=0)
    elif fault == "flag":
        ds[ensemble_file.FLAG] = ds["u"].isel(member=0)
    elif fault == "lat":
        ds = ds.drop_vars(["lat"]).assign_coords(lat=("y", np.arange(4.0)))
    else:
        ds = ds.isel(member=0)
    with pytest.raises(EvaluationError, match=expected) as raised:
        ensemble_file.validate(ds, "forecast.nc")
    assert "forecast.nc" in str(raised.value)


def test_open_names_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(EvaluationError, match="nope.nc: no such file"):
        ensemble_file.open(tmp_path / "nope.nc")
    (tmp_path / "text.nc").write_text("not a NetCDF file")
    with pytest.raises(EvaluationError, match="text.nc: cannot be opened as NetCDF or Zarr"):
        ensemble_file.open(tmp_path / "text.nc")
