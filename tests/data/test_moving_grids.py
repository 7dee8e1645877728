"""Grids that move with time (WRF moving nests): never placed on the first time's grid in silence.

Files laid out as raw wrfout of a moving nest (one file per time, XLAT/XLONG along Time, Mercator), built here,
and the real Katrina moving nest in ../shared/realdata (skipped when absent)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import yaml

from corrdiff.data import DataError, PairedFields
from corrdiff.data.canonical import wrf_grid_mapping

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
TIMES = pd.date_range("2005-08-28T12", periods=3, freq="3h")
SHAPE = (20, 24)
DX = 10e3  # m
MOVES = [(0, 0), (2, -1), (5, -3)]  # (north, east) whole cells the nest has moved at each time
WRF_ATTRS = {"MAP_PROJ": 3, "TRUELAT1": 25.0, "STAND_LON": -89.0, "MOAD_CEN_LAT": 25.0, "DX": DX, "DY": DX}


def nest_grid(north: int, east: int):
    """(lat, lon) of the nest after moving by whole cells."""
    crs = pyproj.CRS.from_cf(wrf_grid_mapping(WRF_ATTRS))
    x = (np.arange(SHAPE[1]) + east) * DX
    y = (np.arange(SHAPE[0]) + north) * DX + 2.7e6
    lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(*np.meshgrid(x, y))
    return lat, lon


def truth(lat, lon, hour: float):
    """A smooth temperature field fixed to the Earth (K)."""
    return 300.0 + 2.0 * np.sin(np.radians(40 * lat)) * np.cos(np.radians(30 * lon)) + 0.01 * hour


def write_nest(folder: Path, attrs=WRF_ATTRS) -> list[Path]:
    import netCDF4

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for time, (north, east) in zip(TIMES, MOVES):
        lat, lon = nest_grid(north, east)
        path = folder / f"wrfout_d02_{time:%Y-%m-%d_%H:%M:%S}"
        with netCDF4.Dataset(path, "w") as nc:
            nc.setncatts(attrs)
            for dim, size in (("Time", None), ("DateStrLen", 19), ("south_north", SHAPE[0]), ("west_east", SHAPE[1])):
                nc.createDimension(dim, size)
            nc.createVariable("Times", "S1", ("Time", "DateStrLen"))[:] = netCDF4.stringtochar(
                np.array([f"{time:%Y-%m-%d_%H:%M:%S}"], "S19"))
            grid = ("Time", "south_north", "west_east")
            for name, values, units in (("XLAT", lat, "degree_north"), ("XLONG", lon, "degree_east")):
                var = nc.createVariable(name, "f4", grid)
                var.units = units
                var[:] = values[None]
            var = nc.createVariable("T2", "f4", grid)
            var.units, var.coordinates = "K", "XLONG XLAT"
            var[:] = truth(lat, lon, (time - TIMES[0]) / pd.Timedelta("1h"))[None]
        paths.append(path)
    return paths


def spec_file(folder: Path, inputs: str, targets: dict) -> Path:
    spec = {"inputs": {"paths": inputs, "variables": ["t2"], "rename": {"t2": "T2"}},
            "targets": {"variables": ["t2"], "rename": {"t2": "T2"}, **targets}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_moving_targets_are_refused_with_the_drift_named(tmp_path):
    write_nest(tmp_path / "nest")
    spec = spec_file(tmp_path, "nest/wrfout_*", {"paths": "nest/wrfout_*"})
    with pytest.raises(DataError, match=r"targets 't2': the grid moves with time \(a moving nest: its centre moves "
                                        r"0\.4\d° north and 0\.\d\d° west from 2005-08-28T12:00 to 2005-08-28T18:00 "
                                        r"\(3 distinct grids over 3 times\)\).*`moving_grid: window`"):
        PairedFields(spec)


def test_the_window_every_time_covers_is_cut_at_each_time_where_it_lies(tmp_path):
    write_nest(tmp_path / "nest")
    spec = spec_file(tmp_path, "nest/wrfout_*", {"paths": "nest/wrfout_*", "moving_grid": "window"})
    fields = PairedFields(spec)
    north, east = np.array(MOVES).T
    assert fields.lat.shape == (SHAPE[0] - np.ptp(north), SHAPE[1] - np.ptp(east))
    times = fields.times()
    targets = fields.read_targets(times)[:, 0]
    hours = (times - times[0]) / np.timedelta64(1, "h")
    for t, hour in enumerate(hours):  # the same place at every time: the field fixed to the Earth, at the window
        np.testing.assert_allclose(targets[t], truth(fields.lat, fields.lon, hour), atol=2e-4)
    # the moving inputs are interpolated from each time's own grid: on the shared lattice, exactly the targets
    np.testing.assert_allclose(fields.read_inputs(times)[:, 0], targets, atol=1e-4)
    first_grid_everywhere = [truth(*nest_grid(*MOVES[0]), hour)[:fields.lat.shape[0], :fields.lat.shape[1]]
                             for hour in hours]
    assert np.abs(np.array(first_grid_everywhere) - targets).max() > 0.05  # what the silent first grid gave


def test_a_chosen_time_keeps_the_times_on_its_grid(tmp_path):
    write_nest(tmp_path / "nest")
    spec = spec_file(tmp_path, "nest/wrfout_*", {"paths": "nest/wrfout_*", "moving_grid": "2005-08-28T15:00"})
    fields = PairedFields(spec)
    np.testing.assert_array_equal(fields.times(), TIMES[1:2].values)
    np.testing.assert_allclose(fields.lat, nest_grid(*MOVES[1])[0], atol=1e-5)
    bad = spec_file(tmp_path, "nest/wrfout_*", {"paths": "nest/wrfout_*", "moving_grid": "2005-08-29T00:00"})
    with pytest.raises(DataError, match=r"`moving_grid: 2005-08-29T00:00` is not one of the file's times "
                                        r"\(2005-08-28T12:00 … 2005-08-28T18:00\)"):
        PairedFields(bad)


def test_a_window_needs_the_projection(tmp_path):
    write_nest(tmp_path / "nest", attrs={"DX": DX})  # no MAP_PROJ: the lattice cannot be found
    spec = spec_file(tmp_path, "nest/wrfout_*", {"paths": "nest/wrfout_*", "moving_grid": "window"})
    with pytest.raises(DataError, match=r"`moving_grid: window` needs the grid's projection"):
        PairedFields(spec)
    spec.write_text(spec.read_text().replace("moving_grid: window", "moving_grid: later"))
    with pytest.raises(DataError, match=r"moving_grid.*'later' is not a time such as 2021-01-01T06"):
        PairedFields(spec)


def test_moving_inputs_onto_a_fixed_grid_follow_the_nest(tmp_path):
    """Moving-nest inputs downscaled onto a fixed lat/lon grid that every time's nest covers."""
    import xarray as xr

    write_nest(tmp_path / "nest")
    lat, lon = np.linspace(26.5, 27.4, 7), np.linspace(-88.8, -87.2, 9)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    hours = np.arange(3) * 3.0
    values = np.stack([truth(grid_lat, grid_lon, h) for h in hours]).astype(np.float32)
    xr.Dataset({"T2": (("time", "lat", "lon"), values, {"units": "K"})},
               coords={"time": TIMES, "lat": lat, "lon": lon}).to_netcdf(tmp_path / "fixed.nc")
    fields = PairedFields(spec_file(tmp_path, "nest/wrfout_*", {"paths": "fixed.nc"}))
    inputs = fields.read_inputs(fields.times())[:, 0]
    assert np.abs(inputs - values).max() < 2e-3  # bilinear error of a 10 km grid, at the right place every time


@pytest.mark.skipif(not (REALDATA / "ci_test_file.nc").exists(), reason="../shared/realdata is absent")
def test_real_katrina_nest_is_refused_or_windowed_never_misplaced(tmp_path):
    katrina = str(REALDATA / "ci_test_file.nc")
    with pytest.raises(DataError, match=r"the grid moves with time .* 0\.98° north and 1\.35° west"):
        PairedFields(spec_file(tmp_path, katrina, {"paths": katrina}))
    fields = PairedFields(spec_file(tmp_path, katrina, {"paths": katrina, "moving_grid": "window"}))
    times = fields.times()
    assert len(times) == 4 and fields.lat.shape == (36, 33)
    targets = fields.read_targets(times)
    np.testing.assert_allclose(fields.read_inputs(times), targets, atol=1e-3)  # each time from its own grid
