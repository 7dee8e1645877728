"""Bilinear interpolation from a rectilinear lat/lon grid to the (possibly curvilinear) fine grid.

The weights are computed once per pair of grids, as a sparse matrix with four weights per fine point,
so interpolating every channel of a sample is one sparse product; a test checks the result against
xarray's `interp` (scipy) on the same points. Descending latitudes (as in
ERA5) and either longitude convention (0..360 or −180..180) are handled; a global input grid wraps
around in longitude.
"""

import numpy as np
import scipy.sparse

from corrdiff.errors import DataError


def _monotonic(values: np.ndarray, name: str, where: str) -> bool:
    """True if descending; an error if not strictly monotonic."""
    steps = np.diff(values)
    if values.size < 2:
        raise DataError(f"{where}: {name} has {values.size} point(s); bilinear interpolation needs at least 2")
    if (steps > 0).all():
        return False
    if (steps < 0).all():
        return True
    bad = int(np.flatnonzero(steps <= 0)[0] if steps[0] > 0 else np.flatnonzero(steps >= 0)[0])
    raise DataError(f"{where}: {name} is not monotonic (at index {bad}: {values[bad]:g} then {values[bad + 1]:g}); "
                    "sort the coordinate first")


class Identity:
    """The input is already on the fine grid."""

    def __call__(self, field: np.ndarray) -> np.ndarray:
        return field


class Bilinear:
    """Interpolate fields (..., ny, nx) on 1-D (lat, lon) to 2-D destination points (H, W)."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str):
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        self.flip_y = _monotonic(lat, "latitude", where)
        self.flip_x = _monotonic(lon, "longitude", where)
        lat, lon = (lat[::-1] if self.flip_y else lat), (lon[::-1] if self.flip_x else lon)
        step = float(np.median(np.diff(lon)))
        self.wrap = lon[-1] - lon[0] + step >= 360.0 - 1e-6  # a global grid: close the circle
        if self.wrap:
            lon = np.append(lon, lon[0] + 360.0)
        # Bring the destination longitudes into the source's convention (0..360 or −180..180).
        dst_lon = (np.asarray(dst_lon, np.float64) - lon[0]) % 360.0 + lon[0]
        dst_lat = np.asarray(dst_lat, np.float64)
        self._check_overlap(lat, lon, dst_lat, dst_lon, where)
        iy, wy = self._axis(lat, dst_lat)
        ix, wx = self._axis(lon, dst_lon)
        self.src_shape, self.dst_shape = (lat.size, lon.size - self.wrap), dst_lat.shape
        self.matrix = self._sparse(iy.ravel(), ix.ravel(), wy.ravel(), wx.ravel())

    def _sparse(self, iy, ix, wy, wx):
        """The interpolation as a sparse (H·W, ny·nx) matrix with four weights per row, on the original
        (unflipped, unwrapped) source indices, so applying it to all channels is one sparse product."""
        ny, nx = self.src_shape
        rows, cols, weights = [], [], []
        for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
            y, x = iy + dy, (ix + dx) % nx  # the wrapped column is column 0
            y = ny - 1 - y if self.flip_y else y
            x = nx - 1 - x if self.flip_x else x
            rows.append(np.arange(iy.size))
            cols.append(y * nx + x)
            weights.append(weight)
        return scipy.sparse.csr_array((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                                      shape=(iy.size, ny * nx))

    @staticmethod
    def _axis(coord: np.ndarray, points: np.ndarray):
        index = np.clip(np.searchsorted(coord, points, side="right") - 1, 0, coord.size - 2)
        weight = (points - coord[index]) / (coord[index + 1] - coord[index])
        return index, np.clip(weight, 0.0, 1.0)

    @staticmethod
    def _check_overlap(lat, lon, dst_lat, dst_lon, where):
        tol = 1e-6
        outside = (dst_lat < lat[0] - tol) | (dst_lat > lat[-1] + tol) | (dst_lon < lon[0] - tol) | (dst_lon > lon[-1] + tol)
        if not outside.any():
            return
        covers = f"the inputs cover lat {lat[0]:g}..{lat[-1]:g}, lon {lon[0]:g}..{lon[-1]:g}"
        wanted = f"the fine grid spans lat {dst_lat.min():g}..{dst_lat.max():g}, lon {dst_lon.min():g}..{dst_lon.max():g}"
        if outside.all():
            raise DataError(f"{where}: the input and target grids do not overlap: {covers}; {wanted}")
        first = np.unravel_index(int(np.flatnonzero(outside.ravel())[0]), outside.shape)
        raise DataError(f"{where}: {int(outside.sum())} of {outside.size} fine-grid points lie outside the input grid "
                        f"(first at y={first[0]}, x={first[1]}: lat {dst_lat[first]:g}, lon {dst_lon[first]:g}); "
                        f"{covers}; {wanted}. The input domain must cover the target domain")

    def __call__(self, field: np.ndarray) -> np.ndarray:
        field = np.asarray(field)
        lead = field.shape[:-2]
        if field.shape[-2:] != self.src_shape:
            raise ValueError(f"expected fields on a {self.src_shape} grid, got {field.shape[-2:]}")
        columns = field.reshape(-1, self.src_shape[0] * self.src_shape[1]).T
        out = (self.matrix @ columns).T.reshape(*lead, *self.dst_shape)
        return out.astype(field.dtype, copy=False)


def regridder(lat: np.ndarray, lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str):
    """Identity when the source grid is the fine grid, else bilinear from a rectilinear source grid."""
    if lat.ndim == 1 and lat.size == dst_lat.shape[0] and lon.size == dst_lat.shape[1]:
        grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
        if np.allclose(grid_lat, dst_lat) and np.allclose(grid_lon, dst_lon):
            return Identity()
    if lat.ndim == 2:
        if lat.shape == dst_lat.shape and np.allclose(lat, dst_lat) and np.allclose(lon, dst_lon):
            return Identity()
        raise DataError(f"{where}: inputs on a curvilinear grid (2-D lat/lon of shape {lat.shape}) must already be "
                        f"on the fine grid {dst_lat.shape}; only rectilinear (1-D lat/lon) inputs are interpolated")
    return Bilinear(lat, lon, dst_lat, dst_lon, where)
