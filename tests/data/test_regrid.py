import numpy as np
import pytest
import xarray as xr

from corrdiff.data import DataError
from corrdiff.data.regrid import Bilinear, Identity, regridder


def smooth(lat, lon):
    return np.sin(np.radians(3 * lat)) * np.cos(np.radians(2 * lon)) + 0.01 * lat


def test_bilinear_equals_xarray_interp_on_a_curvilinear_grid():
    lat = np.arange(10.0, 40.0, 1.5)
    lon = np.arange(100.0, 140.0, 2.0)
    field = smooth(*np.meshgrid(lat, lon, indexing="ij"))
    rng = np.random.default_rng(1)
    dst_lat, dst_lon = rng.uniform(11, 38, (7, 9)), rng.uniform(101, 137, (7, 9))
    ours = Bilinear(lat, lon, dst_lat, dst_lon, "test")(field)
    source = xr.DataArray(field, coords={"lat": lat, "lon": lon}, dims=("lat", "lon"))
    reference = source.interp(lat=xr.DataArray(dst_lat, dims=("y", "x")), lon=xr.DataArray(dst_lon, dims=("y", "x")))
    np.testing.assert_allclose(ours, reference.values, rtol=1e-10, atol=1e-12)


def test_linear_fields_are_reproduced_exactly_and_source_points_are_kept():
    lat, lon = np.arange(0.0, 10.0), np.arange(20.0, 32.0)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    dst_lat, dst_lon = np.meshgrid(np.linspace(0, 9, 13), np.linspace(20, 31, 17), indexing="ij")
    regrid = Bilinear(lat, lon, dst_lat, dst_lon, "test")
    np.testing.assert_allclose(regrid(2 * grid_lat - grid_lon), 2 * dst_lat - dst_lon, atol=1e-12)
    at_nodes = Bilinear(lat, lon, grid_lat, grid_lon, "test")
    field = np.random.default_rng(0).normal(size=grid_lat.shape)
    np.testing.assert_allclose(at_nodes(field), field, atol=1e-12)


def test_descending_latitude_and_either_longitude_convention_agree():
    lat, lon = np.arange(0.0, 20.0, 2.0), np.arange(-20.0, 20.0, 2.5)  # −180..180 convention
    field = smooth(*np.meshgrid(lat, lon, indexing="ij"))
    dst_lat, dst_lon = np.meshgrid(np.linspace(3, 15, 5), np.linspace(-15, 15, 6), indexing="ij")
    expected = Bilinear(lat, lon, dst_lat, dst_lon, "t")(field)
    flipped = Bilinear(lat[::-1], lon, dst_lat, dst_lon, "t")(field[::-1])
    shifted = Bilinear(lat, lon, dst_lat, dst_lon % 360, "t")(field)  # targets given in 0..360
    np.testing.assert_allclose(flipped, expected, atol=1e-12)
    np.testing.assert_allclose(shifted, expected, atol=1e-12)


def test_a_global_grid_wraps_around_the_date_line():
    lat, lon = np.arange(-90.0, 91.0, 10.0), np.arange(0.0, 360.0, 10.0)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    field = np.cos(np.radians(grid_lon))  # periodic in longitude
    dst_lat, dst_lon = np.full((1, 3), 5.0), np.array([[355.0, -2.5, 359.9]])
    values = Bilinear(lat, lon, dst_lat, dst_lon, "t")(field)
    # Between 350° and 360°(=0°) the interpolant blends cos(350°) and cos(0°).
    w = np.array([0.5, 0.75, 0.99])
    np.testing.assert_allclose(values[0], (1 - w) * np.cos(np.radians(350)) + w * 1.0, atol=1e-12)


def test_grids_that_do_not_overlap_or_only_partly_are_errors():
    lat, lon = np.arange(0.0, 10.0), np.arange(0.0, 10.0)
    far = np.meshgrid(np.linspace(50, 55, 3), np.linspace(0, 5, 3), indexing="ij")
    with pytest.raises(DataError, match="do not overlap"):
        Bilinear(lat, lon, *far, "coarse.nc: 't2m'")
    partly = np.meshgrid(np.linspace(5, 12, 4), np.linspace(0, 5, 3), indexing="ij")
    with pytest.raises(DataError, match=r"coarse.nc.*6 of 12 fine-grid points lie outside"):
        Bilinear(lat, lon, *partly, "coarse.nc: 't2m'")


def test_non_monotonic_coordinates_are_errors():
    lat = np.array([0.0, 1.0, 3.0, 2.0, 4.0])
    with pytest.raises(DataError, match=r"latitude is not monotonic \(at index 2"):
        Bilinear(lat, np.arange(5.0), np.ones((2, 2)), np.ones((2, 2)), "coarse.nc")


def test_identity_when_the_inputs_are_already_on_the_fine_grid():
    lat, lon = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    assert isinstance(regridder(lat, lon, lat, lon, "t"), Identity)
    assert isinstance(regridder(np.arange(4.0), np.arange(5.0), lat, lon, "t"), Identity)
    with pytest.raises(DataError, match="outside the input grid"):  # a curvilinear source is interpolated
        regridder(lat + 0.5, lon, lat, lon, "t")


def test_outside_points_are_reported_in_one_longitude_convention():
    """A regional input cut at 9.5° W..1.25° E under a fine domain spanning 10° W..1.75° E: both in −180..180."""
    lat, lon = np.arange(40.0, 50.1, 0.75), np.arange(-9.5, 1.3, 0.25)
    dst = np.meshgrid(np.linspace(42, 48, 5), np.linspace(-10, 1.75, 8), indexing="ij")
    for dst_lon in (dst[1], dst[1] % 360):  # the targets' convention does not matter
        with pytest.raises(DataError, match=r"10 of 40 fine-grid points lie outside the input grid \(first at y=0, "
                                            r"x=0: lat 42, lon -10\); the inputs cover lat 40..49.75, "
                                            r"lon -9.5..1.25; the fine grid spans lat 42..48, lon -10..1.75. "
                                            r"The input domain must cover the target domain$"):
            Bilinear(lat, lon, dst[0], dst_lon, "regional.nc: 't2m'")


def test_edge_nearest_extends_the_inputs_by_at_most_one_cell(caplog):
    lat, lon = np.arange(0.0, 5.0), np.arange(10.0, 16.0)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    field = 2 * grid_lat + grid_lon
    half_out = np.meshgrid(np.array([-0.5, 2.0, 4.5]), np.array([9.5, 12.0, 15.5]), indexing="ij")
    with caplog.at_level("WARNING", logger="corrdiff"):
        values = Bilinear(lat, lon, *half_out, "coarse.nc", edge="nearest")(field)
    assert "coarse.nc: edge: nearest: 8 of 9 fine-grid points lie up to one input cell outside" in caplog.text
    nearest = 2 * np.clip(half_out[0], 0, 4) + np.clip(half_out[1], 10, 15)  # clamped to the grid on each axis
    np.testing.assert_allclose(values, nearest, atol=1e-12)
    too_far = np.meshgrid(np.array([-1.5, 2.0]), np.array([12.0]), indexing="ij")
    with pytest.raises(DataError, match=r"1 of 2 fine-grid points lie more than one input cell outside the input grid"):
        Bilinear(lat, lon, *too_far, "coarse.nc", edge="nearest")
    with pytest.raises(DataError, match="set `edge: nearest`"):
        Bilinear(lat, lon, *half_out, "coarse.nc")
