"""The part of a coarse input grid that interpolation to the fine grid needs: the fine grid's box plus a margin.

The crop selects lazily (`isel` on the unread array), so a store read by URL fetches only the chunks inside the
box, and only at the times asked for (`fields.read_field`). Latitude may descend (ERA5, 90..-90). On a global grid
the box may cross the seam of longitude (0/360 or ±180): the columns either side are then taken together and their
longitudes made continuous (358, 359, 0, 1 → 358, 359, 360, 361), so the interpolation needs no wrap. An axis that the
fine grid is not inside is left whole, so that the interpolation's own errors say where it falls outside.
"""

import dataclasses

import numpy as np

MARGIN = 2  # input cells kept beyond the fine grid's box on each side (bilinear interpolation needs 1)


def crop_fields(fields: list, lat: np.ndarray, lon: np.ndarray, margin: int = MARGIN) -> list:
    """`fields` (readers.Field) cut to the box of the fine grid `lat`, `lon` (H, W) degrees plus `margin` cells."""
    return [crop_field(field, lat, lon, margin) for field in fields]


def crop_field(field, lat: np.ndarray, lon: np.ndarray, margin: int = MARGIN):
    """`field` cut to the box of the fine grid (lat, lon (H, W) degrees) plus `margin` cells; itself when the box
    is the whole grid, or its grid is not rectilinear (2-D lat/lon: not interpolated)."""
    if field.lat.ndim != 1 or field.lon.ndim != 1:
        return field
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    inside = np.isfinite(lat) & np.isfinite(lon)
    if not inside.any():
        return field
    rows = _span(field.lat, lat[inside].min(), lat[inside].max(), margin)
    columns = _columns(field.lon, lon[inside], margin)
    if rows is None and columns is None:
        return field
    rows = rows if rows is not None else slice(None)
    columns, new_lon = columns if columns is not None else (slice(None), field.lon)
    y_dim, x_dim = field.array.dims[-2:]
    return dataclasses.replace(field, array=field.array.isel({y_dim: rows, x_dim: columns}), lat=field.lat[rows],
                               lon=new_lon)


def _monotonic(coord: np.ndarray) -> bool:
    steps = np.diff(coord)
    return coord.size >= 2 and ((steps > 0).all() or (steps < 0).all())


def _span(coord: np.ndarray, low: float, high: float, margin: int) -> slice | None:
    """The indices of a monotonic `coord` (either way) around [low, high], `margin` more each side; None when
    that is all of them, or [low, high] is not inside the coordinate, or it is not monotonic."""
    if not _monotonic(coord):
        return None
    descending = coord[0] > coord[-1]
    ascending = coord[::-1] if descending else coord
    if low < ascending[0] or high > ascending[-1]:
        return None
    first = max(int(np.searchsorted(ascending, low, side="right")) - 1 - margin, 0)
    last = min(int(np.searchsorted(ascending, high, side="left")) + margin, coord.size - 1)
    if descending:
        first, last = coord.size - 1 - last, coord.size - 1 - first
    if first == 0 and last == coord.size - 1:
        return None
    return slice(first, last + 1)


def _columns(lon: np.ndarray, dst_lon: np.ndarray, margin: int):
    """(columns, their longitudes, ascending and continuous) around the fine longitudes `dst_lon`, or None.

    Columns are a slice, or on a global grid whose box crosses the seam an integer array (the last columns, then
    the first): xarray hands either to zarr, which fetches only the chunks they touch.
    """
    if not _monotonic(lon) or lon[0] > lon[-1]:
        return None  # descending longitudes: left whole
    step = float(np.median(np.diff(lon)))
    if lon[-1] - lon[0] + step < 360.0 - 1e-6:  # regional: the fine longitudes in its convention, as regrid does
        centre = 0.5 * (lon[0] + lon[-1])
        dst = (dst_lon - centre + 180.0) % 360.0 + centre - 180.0
        span = _span(lon, dst.min(), dst.max(), margin)
        return None if span is None else (span, lon[span])
    start, end = _arc(np.unique((dst_lon - lon[0]) % 360.0 + lon[0]))
    extended = np.concatenate([lon, lon + 360.0])  # the circle twice, for a box that crosses the seam
    first = int(np.searchsorted(extended, start, side="right")) - 1 - margin  # may be < 0: columns before the seam
    last = int(np.searchsorted(extended, end, side="left")) + margin
    if last - first + 1 >= lon.size:
        return None  # the box goes round the globe: the whole grid, which the interpolation wraps itself
    index = np.arange(first, last + 1)
    columns, turns = index % lon.size, index // lon.size
    if turns[0] == turns[-1]:
        return slice(int(columns[0]), int(columns[-1]) + 1), lon[columns]
    return columns, lon[columns] + 360.0 * turns


def _arc(points: np.ndarray) -> tuple[float, float]:
    """(start, end) of the shortest arc of the circle that holds `points` (sorted degrees within one turn); end may
    pass 360 past the first: it lies opposite the widest gap between neighbours."""
    gaps = np.diff(np.append(points, points[0] + 360.0))
    widest = int(np.argmax(gaps))
    if widest == points.size - 1:
        return float(points[0]), float(points[-1])
    return float(points[widest + 1]), float(points[widest] + 360.0)
