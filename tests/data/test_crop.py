"""The crop of coarse inputs to the fine grid's box: interpolating the crop gives what interpolating the whole grid
gives, on descending latitudes, across the 0/360 and ±180 seams of a global grid, and an axis the fine grid is not
inside (or a box that is everything) is left whole."""

import numpy as np
import pytest
import xarray as xr

from corrdiff.data.crop import crop_field, MARGIN
from corrdiff.data.readers import Field
from corrdiff.data.regrid import Bilinear
from corrdiff.errors import DataError


def coarse_field(lat, lon, times=2) -> Field:
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    values = np.stack([np.cos(np.radians(grid_lat)) * np.sin(np.radians(grid_lon) + t) + 0.01 * grid_lat
                       for t in range(times)]).astype(np.float32)
    array = xr.DataArray(values, dims=("time", "latitude", "longitude"),
                         coords={"latitude": lat, "longitude": lon})
    return Field("t2m", array, "coarse.nc", np.asarray(lat, float), np.asarray(lon, float))


def fine_grid(lat0, lon0, shape=(6, 9), step=0.4):
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return lat0 + step * j + 0.03 * i, lon0 + step * i - 0.03 * j


def interpolated(field: Field, lat, lon, edge="error") -> np.ndarray:
    return Bilinear(field.lat, field.lon, lat, lon, "test", edge)(field.array.values)


GLOBAL_LAT = np.arange(90.0, -90.5, -1.0)  # descending, as ERA5


@pytest.mark.parametrize("coarse_lon, fine_lon0, wraps", [
    (np.arange(0.0, 360.0, 1.0), -3.0, True),       # ERA5's 0..359 across the 0° meridian (fine lon -3..0.3)
    (np.arange(0.0, 360.0, 1.0), 357.0, True),      # the same box, given in 0..360
    (np.arange(0.0, 360.0, 1.0), 120.0, False),     # away from the seam: a plain slice
    (np.arange(-180.0, 180.0, 1.0), 178.0, True),   # a −180..179 grid across the date line
])
def test_crop_interpolates_as_the_whole_grid(coarse_lon, fine_lon0, wraps):
    field = coarse_field(GLOBAL_LAT, coarse_lon)
    lat, lon = fine_grid(40.0, fine_lon0)
    cropped = crop_field(field, lat, lon)
    np.testing.assert_allclose(interpolated(cropped, lat, lon), interpolated(field, lat, lon), rtol=1e-6, atol=1e-6)
    assert (np.diff(cropped.lat) < 0).all() and (np.diff(cropped.lon) == 1.0).all()  # lat still descends, lon continuous
    assert cropped.array.shape[1:] == (cropped.lat.size, cropped.lon.size)
    # the box (lat 40..42.2, lon span 3.2 + 0.15 tilt) plus MARGIN cells each side, no more
    assert cropped.lat.size <= 3 + 2 + 2 * MARGIN and cropped.lon.size <= 4 + 2 + 2 * MARGIN
    assert np.isin((cropped.lon - coarse_lon[0]) % 360 + coarse_lon[0], coarse_lon).all()  # the grid's own columns
    crosses = cropped.lon.max() >= coarse_lon[-1] + 1 or cropped.lon.min() < coarse_lon[0]
    assert crosses == wraps


def test_regional_grid_descending_lat():
    field = coarse_field(np.arange(30.0, 14.9, -1.0), np.arange(110.0, 131.0, 1.0))
    lat, lon = fine_grid(20.0, 115.0)
    cropped = crop_field(field, lat, lon)
    # fine lat 20..22.24, lon 114.85..118.2: the cells around them (20..23, 114..119) and MARGIN = 2 more
    assert list(cropped.lat[[0, -1]]) == [25.0, 18.0] and list(cropped.lon[[0, -1]]) == [112.0, 121.0]
    assert cropped.array.shape[1:] == (8, 10)
    np.testing.assert_allclose(interpolated(cropped, lat, lon), interpolated(field, lat, lon), rtol=1e-6)


def test_left_whole_where_the_fine_grid_is_not_inside():
    field = coarse_field(np.arange(30.0, 14.9, -1.0), np.arange(110.0, 131.0, 1.0))
    lat, lon = fine_grid(10.0, 115.0)  # south of the inputs: latitude whole, longitude cropped
    cropped = crop_field(field, lat, lon)
    assert cropped.lat.size == field.lat.size and cropped.lon.size < field.lon.size
    with pytest.raises(DataError, match="the inputs cover lat 15..30"):  # the interpolation's error, unchanged
        interpolated(cropped, lat, lon)


def test_the_same_field_when_nothing_is_left_out():
    field = coarse_field(np.arange(30.0, 14.9, -1.0), np.arange(110.0, 131.0, 1.0))
    lat, lon = np.meshgrid(field.lat, field.lon, indexing="ij")  # the inputs' own grid
    assert crop_field(field, lat, lon) is field
    global_field = coarse_field(GLOBAL_LAT, np.arange(0.0, 360.0, 1.0))
    lat, lon = np.meshgrid(np.linspace(-10, 10, 5), np.arange(0, 360, 0.5), indexing="ij")  # round the globe
    cropped = crop_field(global_field, lat, lon)
    assert cropped.lon.size == 360 and cropped.lat.size == 25
    curvilinear = Field("t2m", field.array, "coarse.nc", *np.meshgrid(field.lat, field.lon, indexing="ij"))
    assert crop_field(curvilinear, lat, lon) is curvilinear
