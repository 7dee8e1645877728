"""Coarse fields made from fine ones: block means or a Gaussian filter, on regular and curvilinear grids.

A coarse cell stands for a block of factor × factor fine cells. Along each axis of n fine cells there are
n // factor blocks; a remainder r = n mod factor is left out, r // 2 cells at the start and the rest at the end,
so the coarse grid stays centred on the fine one (every fine point then lies less than one coarse cell outside
the coarse grid: what a spec's `edge: nearest` accepts when the coarse fields are interpolated back).

- `block`: the mean of the block's fine cells.
- `gaussian`: a Gaussian-weighted mean centred on the block's centre, σ = factor / 2 fine cells by default,
  truncated at TRUNCATE·σ. It damps what the coarse grid cannot hold more than a block mean does (its response
  at the coarse grid's Nyquist wavenumber is exp(−π²/8) ≈ 0.29 for σ = factor / 2, a block mean's 0.64–0.71),
  without the block's side lobes, as a global model's effective resolution is coarser than its grid.

Both are one weighted mean with separable weights w_y(i)·w_x(j) (`axis_weights`, a sparse (coarse, fine)
matrix per axis), applied to every leading dim at once. Missing values: NaN and ±inf fine cells are left out
and the weights of the others renormalised; a coarse cell is NaN when less than MIN_VALID of its weight is on
finite cells. Near the domain edges the Gaussian's weights outside the domain are left out the same way.

The coarse latitude and longitude are the block means of the fine ones, whatever the method (one coarse
grid for both): latitude as a plain mean, longitude as the direction of the mean of unit vectors, so a block
across the date line (179.9, −179.9) gets 180, not 0. Both in degrees, longitude in the fine grid's convention.
"""

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from corrdiff.errors import DataError

METHODS = ("block", "gaussian")
MIN_VALID = 0.5  # a coarse cell needs at least this fraction of its weight on finite fine cells
TRUNCATE = 4.0  # Gaussian weights beyond TRUNCATE·σ are left out (as scipy.ndimage's gaussian_filter)
MIN_COARSE_CELLS = 2  # per axis: bilinear interpolation back to the fine grid needs two points


@dataclass(frozen=True)
class Coarsening:
    """How fine cells make a coarse one: `factor` (fine cells per coarse cell along each axis), `method` and,
    for `gaussian`, `sigma` in fine cells (default factor / 2)."""

    factor: int
    method: str = "block"
    sigma: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise DataError(f"--method {self.method}: expected one of {', '.join(METHODS)}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 2:
            raise DataError(f"--factor {self.factor}: the coarsening factor must be a whole number of at least 2 "
                            "fine cells per coarse cell")
        if self.sigma is not None and self.method != "gaussian":
            raise DataError("--sigma sets the width of the Gaussian filter; it needs --method gaussian")
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise DataError(f"--sigma {self.sigma}: the Gaussian's width must be a positive number of fine cells")

    @property
    def width(self) -> float:
        """σ of the Gaussian in fine cells (factor / 2 unless given)."""
        return self.sigma if self.sigma is not None else self.factor / 2

    def describe(self) -> str:
        """One phrase for messages and the output's attributes."""
        block = f"{self.factor}×{self.factor} fine cells"
        if self.method == "block":
            return f"block means of {block}"
        return f"Gaussian filter (σ = {self.width:g} fine cells, truncated at {TRUNCATE:g}σ) at the centres of {block}"

    def cell_method(self) -> str:
        """The CF cell_methods entry of a coarsened field."""
        if self.method == "block":
            return f"area: mean (comment: {self.factor}x{self.factor} fine-cell blocks)"
        return f"area: mean (comment: Gaussian weights, sigma {self.width:g} fine cells, at {self.factor}x{self.factor} block centres)"

    def coarse_size(self, size: int, axis: str) -> int:
        """Coarse cells along an axis of `size` fine cells; a DataError when fewer than MIN_COARSE_CELLS."""
        if size // self.factor < MIN_COARSE_CELLS:
            raise DataError(f"--factor {self.factor} is too large for the grid's {size} cells along {axis}: the "
                            f"coarse grid needs at least {MIN_COARSE_CELLS} cells per axis; use a factor of at most "
                            f"{max(size // MIN_COARSE_CELLS, 1)}")
        return size // self.factor

    def trimmed(self, size: int) -> tuple[int, int]:
        """Fine cells left out (at the start, at the end) of an axis of `size` cells."""
        remainder = size % self.factor
        return remainder // 2, remainder - remainder // 2


def axis_weights(size: int, coarsening: Coarsening, axis: str = "the axis") -> scipy.sparse.csr_array:
    """Unnormalised weights (coarse, fine) along one axis of `size` fine cells (see the module docstring)."""
    factor = coarsening.factor
    coarse = coarsening.coarse_size(size, axis)
    start = coarsening.trimmed(size)[0]
    if coarsening.method == "block":
        rows = np.repeat(np.arange(coarse), factor)
        cols = start + np.arange(coarse * factor)
        weights = np.ones(cols.size)
    else:
        sigma = coarsening.width
        centres = start + factor * np.arange(coarse) + (factor - 1) / 2  # in fine-cell indices
        reach = math.ceil(TRUNCATE * sigma) + 1
        cols = np.floor(centres)[:, None].astype(np.int64) + np.arange(-reach, reach + 1)[None]
        distance = cols - centres[:, None]
        inside = (cols >= 0) & (cols < size) & (np.abs(distance) <= TRUNCATE * sigma)
        rows = np.broadcast_to(np.arange(coarse)[:, None], cols.shape)[inside]
        weights = np.exp(-0.5 * (distance[inside] / sigma) ** 2)
        cols = cols[inside]
    return scipy.sparse.csr_array((weights, (rows, cols)), shape=(coarse, size))


def _weighted_sums(values: np.ndarray, wy, wx) -> np.ndarray:
    """Σ w_y(i)·w_x(j)·values[..., i, j] for each coarse cell: (..., Y, X) float64 → (..., Y', X')."""
    lead, (ny, nx) = values.shape[:-2], values.shape[-2:]
    along_x = (wx @ values.reshape(-1, nx).T).T.reshape(*lead, ny, wx.shape[0])
    rows_first = np.moveaxis(along_x, -2, 0).reshape(ny, -1)
    along_y = (wy @ rows_first).reshape(wy.shape[0], *lead, wx.shape[0])
    return np.moveaxis(along_y, 0, -2)


def coarsen_values(values: np.ndarray, wy, wx, dtype=np.float32) -> np.ndarray:
    """(..., Y, X) fine values → (..., Y', X') weighted means in `dtype` (NaN where less than MIN_VALID of a cell's
    weight is on finite values); `wy`, `wx` from `axis_weights`."""
    values = np.asarray(values)
    finite = np.isfinite(values)
    full = _weighted_sums(np.ones(values.shape[-2:]), wy, wx)  # the weight a cell has with every value finite
    if finite.all():  # the common case, in half the time
        return (_weighted_sums(values.astype(np.float64), wy, wx) / full).astype(dtype, copy=False)
    sums = _weighted_sums(np.where(finite, values, 0.0).astype(np.float64), wy, wx)
    weight = _weighted_sums(finite.astype(np.float64), wy, wx)
    enough = weight >= MIN_VALID * full
    means = np.divide(sums, weight, out=np.full_like(sums, np.nan), where=enough)
    return means.astype(dtype, copy=False)


def coarse_coords(lat: np.ndarray, lon: np.ndarray, coarsening: Coarsening, axes: tuple[str, str] = ("y", "x")):
    """Block-mean latitude and longitude (degrees) of the coarse cells: 1-D (Y',), (X',) for 1-D lat (Y,) and
    lon (X,), else (..., Y', X') for lat/lon (..., Y, X) (a grid moving with time: (time, Y, X)); block means
    whatever `coarsening.method` is."""
    block = Coarsening(coarsening.factor)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    ny, nx = lat.shape[-2:] if lat.ndim >= 2 else (lat.size, lon.size)
    wy, wx = axis_weights(ny, block, axes[0]), axis_weights(nx, block, axes[1])
    radians = np.radians(lon)
    if lat.ndim == 1:
        mean_y = lambda v: (wy @ v) / block.factor  # noqa: E731
        mean_x = lambda v: (wx @ v) / block.factor  # noqa: E731
        coarse_lat, sin, cos = mean_y(lat), mean_x(np.sin(radians)), mean_x(np.cos(radians))
    else:
        mean = lambda v: _weighted_sums(v, wy, wx) / block.factor ** 2  # noqa: E731
        coarse_lat, sin, cos = mean(lat), mean(np.sin(radians)), mean(np.cos(radians))
    coarse_lon = np.degrees(np.arctan2(sin, cos))  # (−180, 180]
    if np.nanmin(lon) >= 0:  # the fine grid's convention: 0..360
        coarse_lon = np.mod(coarse_lon, 360.0)
    return coarse_lat, coarse_lon
