"""Whether a forecast lies on truth's grid points: compared by their 2-D lat/lon, never assumed.

Scores compare pixel (y, x) of a forecast with pixel (y, x) of truth, so both must be the same place. Each
point's distance to truth's is measured in km (local east/north plane; longitudes compared modulo 360°, so
0..360 and -180..180 agree) and must stay within `TOLERANCE` grid spacings. A grid that is truth's flipped
north–south or east–west, or shifted, is refused, naming what is wrong; it is not re-oriented in silence. A
file without lat/lon cannot be placed: it is refused unless the user states that it is on the other's grid
(`same_grid`, `corrdiff score --same-grid`), and then takes the other's lat/lon.
"""

import numpy as np
import xarray as xr

from corrdiff.data.canonical import LAT_NAMES, LON_NAMES
from corrdiff.ensemble_file import grid_spacing_km
from corrdiff.errors import EvaluationError

TOLERANCE = 0.1  # of the grid spacing: lat/lon rounded to 0.001° pass on a 2 km grid, a shifted row never does
KM_PER_DEGREE = 6371.0 * np.pi / 180


def lat_lon(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """2-D lat, lon (degrees, (y, x)) of `ds`, or None when it has none: `lat`/`lon` as corrdiff writes them,
    or another common name (`latitude`, WRF's `XLAT`, ...), 2-D over (y, x) or 1-D along y and x."""
    lat = next((ds[n] for n in LAT_NAMES if n in ds.variables and set(ds[n].dims) <= {"y", "x"}), None)
    lon = next((ds[n] for n in LON_NAMES if n in ds.variables and set(ds[n].dims) <= {"y", "x"}), None)
    if lat is None or lon is None:
        return None
    if lat.dims == ("y",) and lon.dims == ("x",):
        lat, lon = xr.broadcast(lat, lon)
    if lat.ndim != 2 or lon.ndim != 2:
        return None
    order = ("y", "x")
    return (np.asarray(lat.transpose(*order).values, np.float64),
            np.asarray(lon.transpose(*order).values, np.float64))


def distance_km(lat_a, lon_a, lat_b, lon_b) -> np.ndarray:
    """Distance (km) between points a and b a short way apart, in the local east/north plane."""
    dlon = (np.asarray(lon_a) - np.asarray(lon_b) + 180.0) % 360.0 - 180.0
    east = dlon * np.cos(np.radians((np.asarray(lat_a) + np.asarray(lat_b)) / 2))
    return KM_PER_DEGREE * np.hypot(np.asarray(lat_a) - np.asarray(lat_b), east)


def place(ds: xr.Dataset, label: str, truth: xr.Dataset, truth_label: str,
          same_grid: bool = False) -> tuple[xr.Dataset, xr.Dataset, str | None]:
    """(ds, truth, note): both placed on the same grid points, or an EvaluationError naming `label` and why.

    A side without lat/lon is refused unless `same_grid`; then it takes the other side's lat/lon (the note
    says so)."""
    mine, theirs = lat_lon(ds), lat_lon(truth)
    if mine is None or theirs is None:
        unplaced = label if mine is None else f"truth ({truth_label})"
        what = f"{unplaced} has no 2-D lat/lon: " + (f"it cannot be placed against truth ({truth_label})"
                                                     if mine is None else f"{label} cannot be placed against it")
        if not same_grid:
            raise EvaluationError(f"{what}, and a flipped or shifted grid would be scored in silence; add lat/lon "
                                  "coordinates, or pass --same-grid if it is on truth's grid points, in truth's order")
        if theirs is not None:
            ds = ds.assign_coords(lat=(("y", "x"), theirs[0]), lon=(("y", "x"), theirs[1]))
        elif mine is not None:
            truth = truth.assign_coords(lat=(("y", "x"), mine[0]), lon=(("y", "x"), mine[1]))
        return ds, truth, f"{unplaced} has no 2-D lat/lon: taken to be on the same grid points (--same-grid)"
    if mine[0].shape != theirs[0].shape:
        raise EvaluationError(f"{label}: lat/lon of shape {mine[0].shape}, truth's ({truth_label}) "
                              f"{theirs[0].shape}; the grids must be the same")
    spacing_km = grid_spacing_km(*theirs)
    apart = distance_km(*mine, *theirs)
    if not np.nanmax(apart) > TOLERANCE * spacing_km:  # NaN coordinates on both sides compare as equal
        return ds, truth, None
    raise EvaluationError(f"{label}: {misplacement(mine, theirs, truth_label, apart, spacing_km)}; scores would "
                          "compare different places: put it on truth's grid, in truth's order, first")


def misplacement(mine, theirs, truth_label: str, apart: np.ndarray, spacing_km: float) -> str:
    """What is wrong with grid `mine` against truth's `theirs` ((lat, lon) pairs), in words: a flip or a shift."""
    (lat, lon), (tlat, tlon) = mine, theirs
    rows = f"its first row is at {np.nanmean(lat[0]):.3f}°N, truth's at {np.nanmean(tlat[0]):.3f}°N"
    columns = f"its first column is at {np.nanmean(lon[:, 0]):.3f}°E, truth's at {np.nanmean(tlon[:, 0]):.3f}°E"
    flips = {"flipped north–south": ((slice(None, None, -1), slice(None)), rows),
             "flipped east–west": ((slice(None), slice(None, None, -1)), columns),
             "flipped north–south and east–west": ((slice(None, None, -1), slice(None, None, -1)), rows)}
    for words, (index, detail) in flips.items():
        if not np.nanmax(distance_km(lat, lon, tlat[index], tlon[index])) > TOLERANCE * spacing_km:
            return f"its grid is truth's ({truth_label}) {words} ({detail})"
    north = float(np.nanmedian(lat - tlat))
    east = float(np.nanmedian((lon - tlon + 180.0) % 360.0 - 180.0))
    return (f"its grid is shifted from truth's ({truth_label}) by {north:+.4g}° north, {east:+.4g}° east (points up "
            f"to {np.nanmax(apart):.3g} km = {np.nanmax(apart) / spacing_km:.2g} grid spacings apart; allowed: "
            f"{TOLERANCE:g})")
