"""Every file of ../shared/realdata through `corrdiff data check`, as inputs or as targets, whichever it can be
(skipped when the folder is absent). Where a real companion is missing (a fine truth at the times of a GFS
forecast, say), a small lat/lon file is written beside it, laid out as a user's own targets would be."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from corrdiff.data import PairedFields
from tests.cli_runner import invoke, refused, succeeded

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
pytest.importorskip("cfgrib")


def real(name: str) -> str:
    return str(REALDATA / name)


def latlon_file(path: Path, times, lat, lon, variables: dict) -> str:
    """A (time, lat, lon) NetCDF of smooth fields `variables` {name: units} on a regular grid."""
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    field = np.sin(np.radians(5 * grid_lat)) * np.cos(np.radians(4 * grid_lon))
    data = {name: (("time", "lat", "lon"), np.repeat(field[None], len(times), 0).astype(np.float32),
                   {"units": units}) for name, units in variables.items()}
    xr.Dataset(data, coords={"time": pd.DatetimeIndex(times), "lat": lat, "lon": lon}).to_netcdf(path)
    return str(path)


def write_spec(folder: Path, inputs: dict, targets: dict, **extra) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({"inputs": inputs, "targets": targets, **extra}, sort_keys=False))
    return path


def checked(spec: Path) -> str:
    output = succeeded(invoke("data", "check", spec)).output
    assert "split " in output, output
    return output


def fine_box(lat0, lon0, n=12, step=0.25):
    return lat0 + step * np.arange(n), lon0 + step * np.arange(n)


def test_gfs_grib2_as_inputs_with_u_and_v(tmp_path):
    lat, lon = fine_box(36.0, -99.0)
    truth = latlon_file(tmp_path / "fine.nc", ["2011-01-15T12"], lat, lon, {"u10": "m s-1", "v10": "m s-1"})
    spec = write_spec(tmp_path, {"paths": real("gfs.t12z.pgrbf120.2p5deg.grib2"),
                                 "variables": ["u10", "v10", "t2m", "t@850", "v@850"]},
                      {"paths": truth, "variables": ["u10", "v10"]})
    checked(spec)
    inputs = PairedFields(spec).read_inputs(np.array(["2011-01-15T12"], "datetime64[ns]"))
    assert np.isfinite(inputs).all() and (inputs[0, :2].std(axis=(1, 2)) > 0.1).all()  # real winds, u and v


def test_nam_grib2_on_its_lambert_grid_as_inputs(tmp_path):
    lat, lon = fine_box(36.0, -99.0)
    truth = latlon_file(tmp_path / "fine.nc", ["2018-09-17T00"], lat, lon, {"u10": "m s-1", "v10": "m s-1"})
    spec = write_spec(tmp_path, {"paths": real("nam.t00z.awp21100.tm00.grib2"), "variables": ["u10", "v10"]},
                      {"paths": truth, "variables": ["u10", "v10"]})
    checked(spec)
    inputs = PairedFields(spec).read_inputs(np.array(["2018-09-17T00"], "datetime64[ns]"))
    assert np.isfinite(inputs).all() and (inputs[0].std(axis=(1, 2)) > 0.1).all()


def test_hrrr_grib2_as_targets(tmp_path):
    lat, lon = np.arange(20.0, 55.1, 1.0), np.arange(-135.0, -59.9, 1.0)
    coarse = latlon_file(tmp_path / "coarse.nc", ["2020-12-14T12"], lat, lon, {"tp": "kg m-2"})
    spec = write_spec(tmp_path, {"paths": coarse, "variables": ["tp"]},
                      {"paths": real("subset_20201214_hrrr.t00z.wrfsfcf12.grib2"), "variables": ["tp"]})
    assert "fine grid 1059×1799" in checked(spec)


def test_era5_ensemble_grib1_as_inputs_one_member_or_the_mean(tmp_path):
    lat, lon = fine_box(40.0, 5.0)
    times = pd.date_range("2017-01-01", periods=4, freq="12h")
    truth = latlon_file(tmp_path / "fine.nc", times, lat, lon, {"t2m": "K"})
    inputs = {"paths": real("era5-levels-members.grib"), "variables": ["t@850", "z@500"]}
    spec = write_spec(tmp_path, inputs, {"paths": truth, "variables": ["t2m"]})
    line = refused(invoke("data", "check", spec))
    assert "has 10 ensemble members (number 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in line and "`member: mean`" in line
    read = {}
    for member in (3, "mean"):
        spec = write_spec(tmp_path, {**inputs, "member": member}, {"paths": truth, "variables": ["t2m"]})
        assert "4 times" in checked(spec)
        read[member] = PairedFields(spec).read_inputs(times.values[:1])
    assert 0 < np.abs(read[3] - read["mean"]).max() < 10  # K and m² s⁻²/g: a member is near the mean, not it


def test_era_interim_netcdf_as_inputs(tmp_path):
    lat, lon = fine_box(30.0, 85.0)
    times = pd.date_range("2012-06-01", periods=4, freq="6h")
    truth = latlon_file(tmp_path / "fine.nc", times, lat, lon, {"t2m": "K"})
    spec = write_spec(tmp_path, {"paths": real("era_interim_tibet.nc"), "variables": ["t2m"]},
                      {"paths": truth, "variables": ["t2m"]})
    assert "4 times" in checked(spec)


def test_wrf_parent_as_inputs_for_its_nest_and_its_full_wrfout(tmp_path):
    one_time = {"train": {"start": "2005-09-21T00:00", "end": "2005-09-21T00:00"}}
    spec = write_spec(tmp_path, {"paths": real("wrf_tip_d1.nc"), "variables": ["t2"], "rename": {"t2": "T2"}},
                      {"paths": real("wrf_tip_d2.nc"), "variables": ["t2"], "rename": {"t2": "T2"}},
                      splits=one_time)
    assert "fine grid 180×270" in checked(spec)
    both = {"train": {"start": "2005-09-21T00:00", "end": "2005-09-21T03:00"}}
    spec = write_spec(tmp_path, {"paths": real("wrf_tip_d1.nc"), "variables": ["t2"], "rename": {"t2": "T2"}},
                      {"paths": real("wrf_d01_allvars_cropped.nc"), "variables": ["t2", "u10", "v10"],
                       "rename": {"t2": "T2", "u10": "U10", "v10": "V10"}}, splits=both)
    assert "2 times" in checked(spec)


def test_katrina_moving_nest_as_targets_only_with_a_fixed_window(tmp_path):
    katrina = {"paths": real("ci_test_file.nc"), "variables": ["t2", "u10", "v10"],
               "rename": {"t2": "T2", "u10": "U10", "v10": "V10"}}
    line = refused(invoke("data", "check", write_spec(tmp_path, katrina, katrina)))
    assert "the grid moves with time" in line and "`moving_grid: window`" in line
    spec = write_spec(tmp_path, katrina, {**katrina, "moving_grid": "window"})
    assert "fine grid 36×33" in checked(spec)
