"""Grids that move with time (WRF moving nests): detected, interpolated per time, or cut to a fixed window.

A file whose latitude/longitude carry the time dimension and change along it has a moving grid
(`corrdiff.data.canonical` keeps them so). What that means depends on the data's role:

- inputs: each time is interpolated from its own grid (`PerTime`, one regridder per distinct grid);
- targets and static fields define the fine grid, which must stay fixed. They are refused, with the drift named,
  unless the spec's `moving_grid` says how to fix it:
  - `window`: the sub-window that every time's grid covers. A WRF nest moves by whole parent cells, so each time's
    grid is the same lattice shifted by whole cells; the window is cut from each time at its own offset, with no
    interpolation (`lattice_window`);
  - a time (e.g. `2005-08-28T12:00`): only the times whose grid is that time's grid are kept.

The first time's grid is never used for other times in silence.
"""

from dataclasses import dataclass

import numpy as np

from corrdiff.data.regrid_curvilinear import projected_axes
from corrdiff.errors import DataError

SAME_GRID_DEGREES = 1e-5  # lat/lon closer than this (float32 rounding) are the same point
LATTICE_TOLERANCE = 0.01  # of a cell: how close a shift must be to whole cells to count as one


def moves(lat: np.ndarray, lon: np.ndarray) -> bool:
    """True if (time, y, x) lat/lon differ between times."""
    return bool(np.abs(lat - lat[:1]).max() > SAME_GRID_DEGREES or np.abs(_wrapped(lon - lon[:1])).max()
                > SAME_GRID_DEGREES)


def drift(lat: np.ndarray, lon: np.ndarray, times: np.ndarray) -> str:
    """How the grid's centre moves from the first to the last time, in words."""
    centre = lambda t: (float(lat[t].mean()), float(np.degrees(np.angle(np.exp(1j * np.radians(lon[t]))
                                                                         .mean()))))
    (lat0, lon0), (lat1, lon1) = centre(0), centre(-1)
    north, east = lat1 - lat0, float(_wrapped(np.array(lon1 - lon0)))
    words = [f"{abs(north):.2f}° {'north' if north >= 0 else 'south'}", f"{abs(east):.2f}° {'east' if east >= 0 else 'west'}"]
    span = f"from {str(times[0])[:16]} to {str(times[-1])[:16]}" if times is not None and len(times) else ""
    distinct = len(grid_groups(lat, lon)[0])
    return f"its centre moves {' and '.join(words)} {span} ({distinct} distinct grids over {lat.shape[0]} times)"


def grid_groups(lat: np.ndarray, lon: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(the first time of each distinct grid, the group of every time (time,)): times sharing a grid together."""
    firsts: list[int] = []
    group = np.empty(lat.shape[0], dtype=np.int64)
    for t in range(lat.shape[0]):
        for g, first in enumerate(firsts):
            if np.abs(lat[t] - lat[first]).max() <= SAME_GRID_DEGREES and \
                    np.abs(_wrapped(lon[t] - lon[first])).max() <= SAME_GRID_DEGREES:
                group[t] = g
                break
        else:
            firsts.append(t)
            group[t] = len(firsts) - 1
    return firsts, group


@dataclass
class Window:
    """The fixed sub-window of a moving grid: at time t, rows y0[t]:y0[t]+height and columns x0[t]:x0[t]+width."""

    y0: np.ndarray  # (time,) int
    x0: np.ndarray
    height: int
    width: int

    def cut(self, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The window of (time, y, x) `values` read at the file's time `positions`."""
        return np.stack([values[i, self.y0[p]:self.y0[p] + self.height, self.x0[p]:self.x0[p] + self.width]
                         for i, p in enumerate(positions)])


def lattice_window(lat: np.ndarray, lon: np.ndarray, mapping: dict | None, where: str) -> tuple[Window, np.ndarray,
                                                                                                np.ndarray]:
    """(the window, its 2-D lat, lon) of a grid (time, y, x) that moves by whole cells of one lattice in the
    projection `mapping` names; a DataError when there is no projection or the shifts are not whole cells."""
    if not mapping:
        raise DataError(f"{where}: `moving_grid: window` needs the grid's projection (WRF's MAP_PROJ attributes or a "
                        "CF grid_mapping) to find the shared window; give one time instead (`moving_grid: <time>`)")
    axes = [projected_axes(mapping, lat[t], lon[t]) for t in range(lat.shape[0])]
    if any(a is None for a in axes):
        raise DataError(f"{where}: `moving_grid: window`: the grid is not regular in its projection "
                        f"({mapping.get('grid_mapping_name')}) at every time; give one time instead")
    dy, dx = np.diff(axes[0][1]).mean(), np.diff(axes[0][2]).mean()
    shift_y = np.array([(a[1][0] - axes[0][1][0]) / dy for a in axes])
    shift_x = np.array([(a[2][0] - axes[0][2][0]) / dx for a in axes])
    whole_y, whole_x = np.rint(shift_y).astype(np.int64), np.rint(shift_x).astype(np.int64)
    if max(np.abs(shift_y - whole_y).max(), np.abs(shift_x - whole_x).max()) > LATTICE_TOLERANCE:
        raise DataError(f"{where}: `moving_grid: window`: the grid does not move by whole cells of one lattice; "
                        "give one time instead (`moving_grid: <time>`)")
    ny, nx = lat.shape[1:]
    height, width = ny - (whole_y.max() - whole_y.min()), nx - (whole_x.max() - whole_x.min())
    if height < 2 or width < 2:
        raise DataError(f"{where}: `moving_grid: window`: the grid moves so far that the times share "
                        f"{max(height, 0)}×{max(width, 0)} cells; give one time instead (`moving_grid: <time>`)")
    window = Window(whole_y.max() - whole_y, whole_x.max() - whole_x, int(height), int(width))
    first = window.cut(lat[:1], np.array([0]))[0], window.cut(lon[:1], np.array([0]))[0]
    return window, first[0], first[1]


class PerTime:
    """Interpolation of a moving input grid (time, y, x): each time from its own grid onto the fine grid."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, make_regridder):
        """`make_regridder(lat2d, lon2d)` builds the regridder of one grid (made once per distinct grid, when
        first needed)."""
        self.lat, self.lon, self._make = lat, lon, make_regridder
        self.firsts, self.group = grid_groups(lat, lon)
        self._regridders: dict[int, object] = {}

    def at(self, position: int):
        """The regridder of the grid at the file's time index `position`."""
        g = int(self.group[position])
        if g not in self._regridders:
            first = self.firsts[g]
            self._regridders[g] = self._make(self.lat[first], self.lon[first])
        return self._regridders[g]

    def __call__(self, field: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """(time, ..., H, W) from (time, ..., y, x) read at the file's time `positions`."""
        return np.stack([self.at(int(p))(field[i]) for i, p in enumerate(positions)])


def _wrapped(degrees: np.ndarray) -> np.ndarray:
    return (degrees + 180.0) % 360.0 - 180.0
