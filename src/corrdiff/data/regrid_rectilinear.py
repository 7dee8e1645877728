"""Bilinear interpolation from a rectilinear lat/lon grid (1-D `lat`, `lon`), and what every regridder shares.

`Sparse` holds a regridding as a sparse matrix (fine points × coarse points); `Bilinear` builds it from 1-D axes:
descending latitudes (as in ERA5), either longitude convention (0..360 or −180..180), and global grids that wrap
around in longitude, or a projection's x/y axes (`corrdiff.data.regrid_curvilinear.Projected`). `_check_overlap`
says which fine points lie outside the input grid, the same way for every regridder (`edge` rules).
"""

import logging

import numpy as np
import scipy.sparse

from corrdiff.errors import DataError

log = logging.getLogger(__name__)
EDGES = ("error", "nearest")


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


class Sparse:
    """A regridding held as a sparse (H·W, ny·nx) matrix: fields (..., ny, nx) → (..., H, W) in one product."""

    def __init__(self, matrix: scipy.sparse.csr_array, src_shape: tuple, dst_shape: tuple):
        self.matrix, self.src_shape, self.dst_shape = matrix, tuple(src_shape), tuple(dst_shape)

    def __call__(self, field: np.ndarray) -> np.ndarray:
        field = np.asarray(field)
        lead = field.shape[:-2]
        if field.shape[-2:] != self.src_shape:
            raise ValueError(f"expected fields on a {self.src_shape} grid, got {field.shape[-2:]}")
        columns = field.reshape(-1, self.src_shape[0] * self.src_shape[1]).T
        out = (self.matrix @ columns).T.reshape(*lead, *self.dst_shape)
        return out.astype(field.dtype, copy=False)


class Bilinear(Sparse):
    """Interpolate fields (..., ny, nx) on 1-D (lat, lon) to 2-D destination points (H, W).

    `edge="nearest"` lets destination points up to one source cell outside the source grid take the nearest
    source values (the interpolation weights are clipped to the grid) instead of being an error.
    `projected=True`: the axes are a projection's y and x (m), with no longitude convention and no wrap;
    `dst_degrees` (lat, lon) then names the destination points in errors.
    """

    def __init__(self, lat: np.ndarray, lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str,
                 edge: str = "error", projected: bool = False, dst_degrees: tuple | None = None):
        if edge not in EDGES:
            raise ValueError(f"edge must be one of {EDGES}, not {edge!r}")
        names = ("projection y", "projection x") if projected else ("latitude", "longitude")
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        self.flip_y = _monotonic(lat, names[0], where)
        self.flip_x = _monotonic(lon, names[1], where)
        lat, lon = (lat[::-1] if self.flip_y else lat), (lon[::-1] if self.flip_x else lon)
        step = float(np.median(np.diff(lon)))
        self.wrap = not projected and lon[-1] - lon[0] + step >= 360.0 - 1e-6  # a global grid: close the circle
        if self.wrap:
            lon = np.append(lon, lon[0] + 360.0)
        dst_lon = np.asarray(dst_lon, np.float64)
        dst_lon = dst_lon if projected else _same_convention(lon, dst_lon, self.wrap)
        dst_lat = np.asarray(dst_lat, np.float64)
        short = ("projection y", "x") if projected else ("lat", "lon")
        covers = (f"the inputs cover {short[0]} {lat[0]:g}..{lat[-1]:g}, {short[1]} {lon[0]:g}..{lon[-1]:g}"
                  + (" m" if projected else ""))
        _check_overlap(np.maximum(_cells_outside(lat, dst_lat), _cells_outside(lon, dst_lon)),
                       dst_degrees or (dst_lat, dst_lon), covers, where, edge)
        iy, wy = self._axis(lat, dst_lat)
        ix, wx = self._axis(lon, dst_lon)
        src_shape = (lat.size, lon.size - self.wrap)
        super().__init__(self._sparse(src_shape, iy.ravel(), ix.ravel(), wy.ravel(), wx.ravel()), src_shape,
                         dst_lat.shape)

    def _sparse(self, src_shape, iy, ix, wy, wx):
        """The interpolation as a sparse (H·W, ny·nx) matrix with four weights per row, on the original
        (unflipped, unwrapped) source indices, so applying it to all channels is one sparse product."""
        ny, nx = src_shape
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


def _check_overlap(cells_out: np.ndarray, dst_degrees: tuple, covers: str, where: str, edge: str) -> None:
    """A DataError for fine points outside the input grid (`cells_out`: how far outside each lies, in input cells,
    0 inside), or a warning for those `edge: nearest` lets take the nearest input values."""
    tol = 1e-6
    dst_lat, dst_lon = dst_degrees
    outside = cells_out > tol
    too_far = cells_out > 1 + tol if edge == "nearest" else outside
    if not too_far.any():
        if outside.any():
            log.warning(f"{where}: edge: nearest: {int(outside.sum())} of {outside.size} fine-grid points lie "
                        "up to one input cell outside the input grid and take the nearest input values")
        return
    wanted = f"the fine grid spans lat {dst_lat.min():g}..{dst_lat.max():g}, lon {dst_lon.min():g}..{dst_lon.max():g}"
    if outside.all():
        raise DataError(f"{where}: the input and target grids do not overlap: {covers}; {wanted}")
    first = np.unravel_index(int(np.flatnonzero(too_far.ravel())[0]), too_far.shape)
    beyond = " more than one input cell" if edge == "nearest" else ""
    hint = ("; or, as none lies more than one input cell outside, set `edge: nearest` in the spec to give them "
            "the nearest input values" if edge == "error" and not (cells_out > 1 + tol).any() else "")
    raise DataError(f"{where}: {int(too_far.sum())} of {too_far.size} fine-grid points lie{beyond} outside the "
                    f"input grid (first at y={first[0]}, x={first[1]}: lat {dst_lat[first]:g}, "
                    f"lon {dst_lon[first]:g}); {covers}; {wanted}. The input domain must cover the target "
                    f"domain{hint}")


def _same_convention(lon: np.ndarray, dst_lon: np.ndarray, wrap: bool) -> np.ndarray:
    """Destination longitudes in the source's convention: within [lon[0], lon[0] + 360) for a global grid,
    else within 180° of the source domain's centre (so −10 stays −10 next to a source starting at −9.5)."""
    if wrap:
        return (dst_lon - lon[0]) % 360.0 + lon[0]
    centre = 0.5 * (lon[0] + lon[-1])
    return (dst_lon - centre + 180.0) % 360.0 + centre - 180.0


def _cells_outside(coord: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far each point lies outside an ascending coordinate, in units of the edge cell (0 inside)."""
    below = (coord[0] - points) / (coord[1] - coord[0])
    above = (points - coord[-1]) / (coord[-1] - coord[-2])
    return np.maximum(np.maximum(below, above), 0.0)
