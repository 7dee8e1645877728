"""Interpolation of coarse input fields onto the (possibly curvilinear) fine grid: which regridder for which grid.

Every regridder is a sparse matrix (fine points × coarse points), computed once per pair of grids, so
interpolating every channel of a sample is one sparse product. Three source grids are understood:

- rectilinear lat/lon (1-D `lat`, `lon`): bilinear in degrees (`corrdiff.data.regrid_rectilinear.Bilinear`);
  descending latitudes (as in ERA5), either longitude convention (0..360 or −180..180) and global grids that
  wrap around in longitude;
- curvilinear with a known projection (2-D lat/lon and a CF grid mapping, e.g. WRF's MAP_PROJ attributes or a
  CF `grid_mapping` variable), regular in that projection: bilinear on the projection's x/y axes
  (`corrdiff.data.regrid_curvilinear.Projected`, pyproj for the projection);
- any other curvilinear grid (GRIB Lambert grids of NAM/HRRR as cfgrib opens them, rotated-pole models without
  a mapping, ocean grids): linear on the Delaunay triangles of the source points in a local azimuthal plane
  (`corrdiff.data.regrid_curvilinear.Triangulated`, scipy's qhull).

Fine points outside the input grid are an error, unless the spec says `edge: nearest`: then points at most one
input cell outside take the nearest input values (inputs made by block-averaging the targets, or cut close to
the target domain, stop half a cell inside it), and a warning says how many points that concerns.
"""

import numpy as np

from corrdiff.data.regrid_curvilinear import curvilinear
from corrdiff.data.regrid_rectilinear import Bilinear, EDGES, Identity, Sparse

__all__ = ["Bilinear", "EDGES", "Identity", "Sparse", "regridder"]


def regridder(lat: np.ndarray, lon: np.ndarray, dst_lat: np.ndarray, dst_lon: np.ndarray, where: str,
              edge: str = "error", mapping: dict | None = None):
    """Identity when the source grid is the fine grid, else bilinear from a rectilinear source grid, else from a
    curvilinear one (2-D lat/lon): on its projection's axes when `mapping` (CF grid-mapping attributes) is
    known and the grid is regular in it, else on triangles (`corrdiff.data.regrid_curvilinear`)."""
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, not {edge!r}")
    if lat.ndim == 1 and lat.size == dst_lat.shape[0] and lon.size == dst_lat.shape[1]:
        grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
        if np.allclose(grid_lat, dst_lat) and np.allclose(grid_lon, dst_lon):
            return Identity()
    if lat.ndim == 2:
        if lat.shape == dst_lat.shape and np.allclose(lat, dst_lat) and np.allclose(lon, dst_lon):
            return Identity()
        return curvilinear(lat, lon, dst_lat, dst_lon, where, edge, mapping)
    return Bilinear(lat, lon, dst_lat, dst_lon, where, edge)
