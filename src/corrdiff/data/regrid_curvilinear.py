"""Interpolation from a curvilinear source grid (2-D lat/lon) onto the fine grid: projected or triangulated.

- `Projected`: the source grid is regular in a known projection (WRF's Lambert, polar stereographic or Mercator
  grids, a CF grid mapping such as rotated pole). The fine points are carried into that projection with pyproj
  and interpolated bilinearly on its x/y axes: exactly what `Bilinear` does on a lat/lon grid.
- `Triangulated`: any 2-D lat/lon, with no projection known (GRIB Lambert grids as cfgrib opens them, ocean grids).
  The source points are placed on a plane by an azimuthal equidistant projection about the domain's centre and
  triangulated (Delaunay, scipy's qhull); each fine point takes the linear (barycentric) weights of its triangle.

`curvilinear()` picks `Projected` when it can and `Triangulated` otherwise. On the Tibetan WRF parent → nest pair
(scripts/curvilinear_regrid_study.py, docs/real-data.md) both are within bilinear truncation of an analytic
field; `Projected` has the smaller error, so it is preferred.
"""

import logging

import numpy as np
import scipy.sparse

from corrdiff.data.regrid_rectilinear import Bilinear, Sparse, _check_overlap

log = logging.getLogger(__name__)
REGULAR_TOLERANCE = 1e-3  # of a cell: how far projected rows/columns may stray from straight axes
MARGIN_CELLS = 3  # source points kept around the fine grid's bounding box before triangulating
SPHERE_RADIUS = 6371000.0  # m, for the local plane of the triangulation


def curvilinear(lat: np.ndarray, lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str,
                edge: str, mapping: dict | None) -> Sparse:
    """The regridder from a 2-D (lat, lon) source grid to fine points (H, W): projected if `mapping` makes the
    source regular, else triangulated."""
    if mapping:
        axes = projected_axes(mapping, lat, lon)
        if axes is not None:
            return Projected(axes, lat.shape, dst_lat, dst_lon, where, edge)
        log.info(f"{where}: the source grid is not regular in its grid mapping "
                 f"({mapping.get('grid_mapping_name')}); interpolating on triangles")
    return Triangulated(lat, lon, dst_lat, dst_lon, where, edge)


def _transformer(mapping: dict):
    """A pyproj transformer from (lon, lat) degrees on the mapping's own ellipsoid or sphere to its x/y, m;
    None for a mapping pyproj does not understand."""
    import pyproj

    try:
        crs = pyproj.CRS.from_cf(mapping)
    except (pyproj.exceptions.CRSError, KeyError, TypeError, ValueError):
        return None
    if crs.geodetic_crs is None:
        return None
    return pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)


def projected_axes(mapping: dict, lat: np.ndarray, lon: np.ndarray):
    """(transformer, y (ny,), x (nx,)) when the grid (ny, nx) of degrees is regular in `mapping`'s projection
    (every row shares one y and every column one x, to `REGULAR_TOLERANCE` of a cell); else None."""
    transformer = _transformer(mapping)
    if transformer is None:
        return None
    x, y = transformer.transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    x_axis, y_axis = x.mean(axis=0), y.mean(axis=1)
    if not (np.isfinite(x_axis).all() and np.isfinite(y_axis).all()) or min(x.shape) < 2:
        return None
    dx, dy = np.abs(np.diff(x_axis)).min(), np.abs(np.diff(y_axis)).min()
    if dx == 0 or dy == 0:
        return None
    straight = (np.abs(x - x_axis).max() <= REGULAR_TOLERANCE * dx) and (np.abs(y - y_axis[:, None]).max()
                                                                       <= REGULAR_TOLERANCE * dy)
    return (transformer, y_axis, x_axis) if straight else None


class Projected(Sparse):
    """Bilinear on the x/y axes of the source's projection, from a grid regular in it (`projected_axes`)."""

    def __init__(self, axes, src_shape: tuple, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str, edge: str):
        transformer, y_axis, x_axis = axes
        dst_lat, dst_lon = np.asarray(dst_lat, np.float64), np.asarray(dst_lon, np.float64)
        dst_x, dst_y = transformer.transform(dst_lon, dst_lat)
        inner = Bilinear(y_axis, x_axis, dst_y, dst_x, where, edge, projected=True, dst_degrees=(dst_lat, dst_lon))
        super().__init__(inner.matrix, src_shape, dst_lat.shape)


class Triangulated(Sparse):
    """Linear interpolation on the Delaunay triangles of the source points, in a local azimuthal plane."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str,
                 edge: str):
        from scipy.spatial import Delaunay, cKDTree

        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        dst_lat, dst_lon = np.asarray(dst_lat, np.float64), np.asarray(dst_lon, np.float64)
        finite = np.isfinite(lat) & np.isfinite(lon)
        plane = _local_plane(np.concatenate([lat[finite], dst_lat.ravel()]),
                             np.concatenate([lon[finite], dst_lon.ravel()]))
        src_xy = np.stack(plane(lat, lon), -1)  # (ny, nx, 2), m
        dst_xy = np.stack(plane(dst_lat, dst_lon), -1).reshape(-1, 2)
        cell = _cell_size(src_xy)  # (ny, nx), m
        kept = np.flatnonzero((finite & _near_box(src_xy, cell, dst_xy)).ravel())
        covers = (f"the inputs cover lat {np.nanmin(lat):g}..{np.nanmax(lat):g}, "
                  f"lon {np.nanmin(lon):g}..{np.nanmax(lon):g}")
        if kept.size < 3:
            _check_overlap(np.full(dst_lat.shape, np.inf), (dst_lat, dst_lon), covers, where, "error")
        points = src_xy.reshape(-1, 2)[kept]
        triangulation = Delaunay(points)
        simplex = triangulation.find_simplex(dst_xy)
        inside = simplex >= 0
        tree = cKDTree(points)
        distance, nearest = tree.query(dst_xy)
        cells_out = np.where(inside, 0.0, distance / cell.ravel()[kept][nearest])
        _check_overlap(cells_out.reshape(dst_lat.shape), (dst_lat, dst_lon), covers, where, edge)
        rows, cols, weights = [], [], []
        vertices = triangulation.simplices[simplex[inside]]  # (n, 3) indices into `points`
        transform = triangulation.transform[simplex[inside]]  # (n, 3, 2): barycentric coordinates of a point
        partial = np.einsum("nij,nj->ni", transform[:, :2], dst_xy[inside] - transform[:, 2])
        barycentric = np.column_stack([partial, 1.0 - partial.sum(1)])
        inside_rows = np.flatnonzero(inside)
        for corner in range(3):
            rows.append(inside_rows)
            cols.append(kept[vertices[:, corner]])
            weights.append(barycentric[:, corner])
        outside_rows = np.flatnonzero(~inside)  # within one cell with `edge: nearest`: the nearest source value
        rows.append(outside_rows)
        cols.append(kept[nearest[outside_rows]])
        weights.append(np.ones(outside_rows.size))
        matrix = scipy.sparse.csr_array((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                                        shape=(dst_xy.shape[0], lat.size))
        super().__init__(matrix, lat.shape, dst_lat.shape)


def _local_plane(lat: np.ndarray, lon: np.ndarray):
    """(lat, lon) → (x, y) m in an azimuthal equidistant projection about the points' centre on a sphere."""
    import pyproj

    phi, lam = np.radians(lat), np.radians(lon)
    centre = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]).mean(axis=1)
    lat0 = float(np.degrees(np.arctan2(centre[2], np.hypot(centre[0], centre[1]))))
    lon0 = float(np.degrees(np.arctan2(centre[1], centre[0])))
    projection = pyproj.Proj(proj="aeqd", lat_0=lat0, lon_0=lon0, R=SPHERE_RADIUS)
    return lambda la, lo: projection(np.asarray(lo, np.float64), np.asarray(la, np.float64))


def _cell_size(xy: np.ndarray) -> np.ndarray:
    """The larger of the distances to the next point along each grid axis, at every point (ny, nx), m."""
    along_y = np.hypot(*np.moveaxis(np.diff(xy, axis=0), -1, 0))
    along_x = np.hypot(*np.moveaxis(np.diff(xy, axis=1), -1, 0))
    along_y = np.concatenate([along_y, along_y[-1:]], axis=0)
    along_x = np.concatenate([along_x, along_x[:, -1:]], axis=1)
    size = np.fmax(along_y, along_x)
    return np.where(np.isfinite(size) & (size > 0), size, np.nanmedian(size))


def _near_box(src_xy: np.ndarray, cell: np.ndarray, dst_xy: np.ndarray) -> np.ndarray:
    """Source points within `MARGIN_CELLS` cells of the fine points' bounding box (ny, nx), so that a large source
    grid (HRRR: 1.9 million points) is triangulated only where it is needed."""
    margin = MARGIN_CELLS * cell
    low, high = dst_xy.min(axis=0), dst_xy.max(axis=0)
    x, y = src_xy[..., 0], src_xy[..., 1]
    with np.errstate(invalid="ignore"):
        return (x >= low[0] - margin) & (x <= high[0] + margin) & (y >= low[1] - margin) & (y <= high[1] + margin)
