"""Interpolation from curvilinear (2-D lat/lon) source grids: analytic fields on one projected grid interpolated
onto another, within bilinear truncation; edges; and the real WRF parent → nest pair."""

import logging
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr

from corrdiff.data import DataError
from corrdiff.data.canonical import wrf_grid_mapping
from corrdiff.data.regrid import regridder
from corrdiff.data.regrid_curvilinear import Projected, Triangulated, curvilinear

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
LAMBERT = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [30.0, 60.0],
           "longitude_of_central_meridian": -95.0, "latitude_of_projection_origin": 40.0,
           "earth_radius": 6370000.0, "false_easting": 0.0, "false_northing": 0.0}
WAVE = 2 * np.pi / 400e3  # 1/m: the analytic field's wavenumber


def projected_grid(mapping: dict, x: np.ndarray, y: np.ndarray):
    """2-D (lat, lon, x, y) of the grid regular on axes x, y (m) of `mapping`'s projection."""
    crs = pyproj.CRS.from_cf(mapping)
    to_degrees = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    grid_x, grid_y = np.meshgrid(x, y)
    lon, lat = to_degrees.transform(grid_x, grid_y)
    return lat, lon, grid_x, grid_y


def to_lambert(lat, lon):
    crs = pyproj.CRS.from_cf(LAMBERT)
    return pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True).transform(lon, lat)


def analytic(x, y):
    return np.sin(WAVE * x) * np.cos(WAVE * y) + 1e-6 * x


def parent_and_destination():
    """A 30 km Lambert source grid and a regular 0.1° lat/lon destination inside it, as in a WRF → target pair."""
    lat, lon, x, y = projected_grid(LAMBERT, np.arange(-600e3, 600e3 + 1, 30e3), np.arange(-450e3, 450e3 + 1, 30e3))
    dst_lat, dst_lon = np.meshgrid(np.arange(38.0, 42.0, 0.1), np.arange(-99.0, -91.0, 0.1), indexing="ij")
    return lat, lon, x, y, dst_lat, dst_lon


def test_lambert_to_lat_lon_is_within_bilinear_truncation_for_both_methods():
    lat, lon, x, y, dst_lat, dst_lon = parent_and_destination()
    dst_x, dst_y = to_lambert(dst_lat, dst_lon)
    bound = 2 * (30e3 ** 2) * WAVE ** 2 / 8  # (h_x² |f_xx| + h_y² |f_yy|) / 8
    projected = curvilinear(lat, lon, dst_lat, dst_lon, "t", "error", LAMBERT)
    triangulated = curvilinear(lat, lon, dst_lat, dst_lon, "t", "error", None)
    assert isinstance(projected, Projected) and isinstance(triangulated, Triangulated)
    for regrid in (projected, triangulated):
        error = np.abs(regrid(analytic(x, y)) - analytic(dst_x, dst_y)).max()
        assert 0.05 * bound < error <= bound  # an interpolation error, and within the bilinear bound
    # bilinear on the projection's own axes reproduces a field linear in them exactly
    np.testing.assert_allclose(projected(3 * x - 2 * y), 3 * dst_x - 2 * dst_y, rtol=1e-9, atol=1e-3)


def test_rotated_pole_grid_is_interpolated_on_its_rotated_axes():
    rotated = {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25,
               "grid_north_pole_longitude": -162.0}
    rlat, rlon = np.arange(-5.0, 5.01, 0.25), np.arange(-6.0, 6.01, 0.25)
    lat, lon, grid_rlon, grid_rlat = projected_grid(rotated, rlon, rlat)
    field = np.sin(np.radians(20 * grid_rlat)) + 0.1 * grid_rlon
    dst_rlon, dst_rlat = np.meshgrid(np.linspace(-4, 4, 9), np.linspace(-3, 3, 7))
    crs = pyproj.CRS.from_cf(rotated)
    dst_lon, dst_lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(dst_rlon, dst_rlat)
    regrid = regridder(lat, lon, dst_lat, dst_lon, "t", mapping=rotated)
    assert isinstance(regrid, Projected)
    expected = np.sin(np.radians(20 * dst_rlat)) + 0.1 * dst_rlon
    bound = (0.25 ** 2) * np.radians(20) ** 2 / 8
    assert np.abs(regrid(field) - expected).max() <= bound


def test_a_grid_not_regular_in_its_mapping_falls_back_to_triangles():
    lat, lon, x, y, dst_lat, dst_lon = parent_and_destination()
    bent = lat + 0.02 * np.sin(np.arange(lat.shape[1]) / 3.0)  # rows no longer straight in the projection
    assert isinstance(curvilinear(bent, lon, dst_lat, dst_lon, "t", "error", LAMBERT), Triangulated)


def to_degrees(x, y):
    crs = pyproj.CRS.from_cf(LAMBERT)
    return pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)


@pytest.mark.parametrize("mapping", [LAMBERT, None], ids=["projected", "triangulated"])
def test_points_outside_are_an_error_unless_edge_nearest_and_within_one_cell(mapping, caplog):
    lat, lon, x, y, _, _ = parent_and_destination()
    # the source's first 4 columns shifted half a cell (15 km) west: the first column lies half a cell outside
    dst_x, dst_y = x[1:-1, :4] - 15e3, y[1:-1, :4]
    dst_lon, dst_lat = to_degrees(dst_x, dst_y)
    with pytest.raises(DataError, match=r"29 of 116 fine-grid points lie outside the input grid .*set `edge: nearest`"):
        regridder(lat, lon, dst_lat, dst_lon, "coarse.nc: 't2m'", mapping=mapping)
    with caplog.at_level(logging.WARNING):
        regrid = regridder(lat, lon, dst_lat, dst_lon, "coarse.nc: 't2m'", edge="nearest", mapping=mapping)
    assert "29 of 116 fine-grid points lie up to one input cell outside" in caplog.text
    interpolated = regrid(analytic(x, y))
    np.testing.assert_allclose(interpolated[:, 0], analytic(x[1:-1, 0], y[1:-1, 0]), atol=1e-9)  # the nearest
    far_lon, far_lat = to_degrees(x[1:-1, :4] - 75e3, dst_y)  # the first two columns 2.5 and 1.5 cells out
    with pytest.raises(DataError, match="58 of 116 fine-grid points lie more than one input cell outside"):
        regridder(lat, lon, far_lat, far_lon, "coarse.nc: 't2m'", edge="nearest", mapping=mapping)


def test_grids_that_do_not_overlap_say_so():
    lat, lon, *_ = parent_and_destination()
    dst_lat, dst_lon = np.meshgrid(np.arange(-10.0, -5.0), np.arange(10.0, 15.0), indexing="ij")
    for mapping in (LAMBERT, None):
        with pytest.raises(DataError, match="the input and target grids do not overlap"):
            regridder(lat, lon, dst_lat, dst_lon, "t", mapping=mapping)


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_wrf_parent_to_nest_t2_is_closer_than_nearest_neighbour():
    parent, nest = (xr.open_dataset(REALDATA / f"wrf_tip_d{n}.nc") for n in (1, 2))
    lat, lon = parent["XLAT"].values, parent["XLONG"].values
    dst_lat, dst_lon = nest["XLAT"].values, nest["XLONG"].values
    regrid = regridder(lat, lon, dst_lat, dst_lon, "d1", mapping=wrf_grid_mapping(parent.attrs))
    assert isinstance(regrid, Projected)
    t2_parent, t2_nest = parent["T2"].isel(Time=0).values, nest["T2"].isel(Time=0).values
    mae = np.abs(regrid(t2_parent) - t2_nest).mean()
    triangulated = regridder(lat.astype(np.float64), lon, dst_lat, dst_lon, "d1")
    assert np.abs(triangulated(t2_parent) - t2_nest).mean() == pytest.approx(mae, rel=0.02)
    assert 0.5 < mae < 1.2  # K: the 30 km run against its own 10 km nest, a real difference, not a misplacement


def test_a_cordex_rotated_pole_file_is_read_and_interpolated_on_its_rotated_axes(tmp_path):
    """A regional climate model's NetCDF as CORDEX writes it: rlat/rlon dims, 2-D lat/lon, a `rotated_pole` mapping."""
    from corrdiff.data import PairedFields

    rotated = {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25,
               "grid_north_pole_longitude": -162.0}
    rlat, rlon = np.arange(-6.0, 6.01, 0.44), np.arange(-8.0, 8.01, 0.44)
    lat, lon, grid_rlon, grid_rlat = projected_grid(rotated, rlon, rlat)
    times = np.array(["2021-01-01T00", "2021-01-01T06"], "datetime64[ns]")
    field = np.stack([np.sin(np.radians(15 * grid_rlat)) + 0.1 * grid_rlon + k for k in range(2)]).astype(np.float32)
    xr.Dataset({"tas": (("time", "rlat", "rlon"), field, {"units": "K", "grid_mapping": "rotated_pole"}),
                "rotated_pole": ((), np.int32(0), rotated)},
               coords={"time": times, "rlat": rlat, "rlon": rlon, "lat": (("rlat", "rlon"), lat),
                       "lon": (("rlat", "rlon"), lon)}).to_netcdf(tmp_path / "cordex.nc")
    dst_lat, dst_lon = np.meshgrid(np.linspace(lat.min() + 2, lat.max() - 2, 6), np.linspace(
        np.median(lon) - 3, np.median(lon) + 3, 8), indexing="ij")
    xr.Dataset({"tas": (("time", "y", "x"), np.zeros((2, 6, 8), np.float32), {"units": "K"})},
               coords={"time": times, "lat": (("y", "x"), dst_lat), "lon": (("y", "x"), dst_lon)}
               ).to_netcdf(tmp_path / "fine.nc")
    (tmp_path / "spec.yaml").write_text("inputs: {paths: cordex.nc, variables: [tas]}\n"
                                        "targets: {paths: fine.nc, variables: [tas]}\n")
    fields = PairedFields(tmp_path / "spec.yaml")
    assert isinstance(fields._interpolated.regridder_of(fields.inputs[0]), Projected)
    crs = pyproj.CRS.from_cf(rotated)
    dst_rlon, dst_rlat = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True).transform(dst_lon, dst_lat)
    expected = np.sin(np.radians(15 * dst_rlat)) + 0.1 * dst_rlon
    bound = (0.44 ** 2) * np.radians(15) ** 2 / 8
    read = fields.read_inputs(times)[:, 0]
    assert np.abs(read[1] - read[0] - 1).max() < 1e-5 and np.abs(read[0] - expected).max() <= bound
