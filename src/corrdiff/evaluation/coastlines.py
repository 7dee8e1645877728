"""Coastlines for the report's maps, from a small file shipped with the package: nothing is downloaded.

`coastlines.npz` (≈200 kB, built by `scripts/build_coastlines.py`) holds the 0.5 contour of a 2′ (≈3.7 km)
land fraction made from the GLOBE 30″ land mask (NOAA), simplified to 0.01°: fine enough for regional
km-scale domains, with no cartopy, shapefile or network needed. Lines are lon/lat in degrees, lon in
[−180, 180]; `lines_in` shifts them to a domain's own longitude convention (e.g. 0…360).
"""

import functools
from importlib import resources

import numpy as np
from matplotlib.collections import LineCollection

DATA = "coastlines.npz"


@functools.cache
def _all_lines() -> tuple[np.ndarray, ...]:
    """Every coastline as (n, 2) float32 arrays of (lon, lat) degrees; read once per process."""
    with resources.files("corrdiff.evaluation").joinpath(DATA).open("rb") as handle, np.load(handle) as packed:
        counts, first, delta = packed["counts"], packed["first"].astype(np.int32), packed["delta"].astype(np.int32)
    lines, start = [], 0
    for k, n in enumerate(counts):
        steps = delta[start : start + n - 1]
        start += n - 1
        lines.append((first[k] + np.concatenate([np.zeros((1, 2), np.int32), np.cumsum(steps, axis=0)]))
                     .astype(np.float32) / 100)
    return tuple(lines)


@functools.cache
def _boxes() -> np.ndarray:
    """(line, 4) west, east, south, north of every line: most lines are skipped without looking at them."""
    return np.array([(line[:, 0].min(), line[:, 0].max(), line[:, 1].min(), line[:, 1].max())
                     for line in _all_lines()])


def lines_in(lon: np.ndarray, lat: np.ndarray, margin_deg: float = 0.5) -> list[np.ndarray]:
    """Coastline pieces (n, 2) of (lon, lat) within the box of a domain's 2-D lon/lat (plus a margin),
    longitudes wrapped to the domain's convention (within 180° of its centre)."""
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    centre = float(np.nanmean(lon))
    wrapped = ((lon - centre + 180.0) % 360.0) - 180.0 + centre  # the domain's own lon, continuous
    west, east = np.nanmin(wrapped) - margin_deg, np.nanmax(wrapped) + margin_deg
    south, north = np.nanmin(lat) - margin_deg, np.nanmax(lat) + margin_deg
    pieces = []
    lines, boxes = _all_lines(), _boxes()
    near = (boxes[:, 3] >= south) & (boxes[:, 2] <= north)
    near &= np.any([(boxes[:, 1] >= west + shift) & (boxes[:, 0] <= east + shift) for shift in (-360, 0, 360)],
                   axis=0)
    for k in np.flatnonzero(near):
        line = lines[k]
        x = ((line[:, 0] - centre + 180.0) % 360.0) - 180.0 + centre
        inside = (x >= west) & (x <= east) & (line[:, 1] >= south) & (line[:, 1] <= north)
        if not inside.any():
            continue
        keep = inside.copy()
        keep[1:] |= inside[:-1]  # one point beyond the box on each side, so lines reach the frame
        keep[:-1] |= inside[1:]
        # runs of drawable segments: both ends kept, and no jump of the wrap (a line crossing the antimeridian)
        drawable = keep[:-1] & keep[1:] & (np.abs(np.diff(x)) <= 180.0)
        edges = np.flatnonzero(np.diff(np.r_[0, drawable.astype(np.int8), 0]))
        for first, last in zip(edges[::2], edges[1::2]):  # segments first … last − 1
            pieces.append(np.column_stack([x[first : last + 1], line[first : last + 1, 1]]))
    return pieces


def draw(ax, lon: np.ndarray, lat: np.ndarray, pieces: list[np.ndarray] | None = None, **style) -> int:
    """Draw the coastlines of the domain (or the given `lines_in` pieces) on a plain lon/lat axis without
    changing its limits; returns the number of pieces drawn (0 for a domain with no coast)."""
    pieces = lines_in(lon, lat) if pieces is None else pieces
    if pieces:
        ax.add_collection(LineCollection(pieces, **{"colors": "black", "linewidths": 0.6, **style}), autolim=False)
    return len(pieces)
