"""One form for every opened store: a `time` dimension of valid times (datetime64) and a grid fixed in time.

Sources name and lay out time differently; each file is brought to that form as it is opened:

- most NetCDF / Zarr: a `time` dimension coordinate (kept);
- ERA5 from the CDS (since 2024): a `valid_time` dimension, with `number` and `expver` beside it;
- cfgrib (GRIB): a reference `time`, a lead `step` and their sum `valid_time`, which is 0-D (one field), 1-D over
  `time` (analyses) or `step` (one forecast), or 2-D over (`time`, `step`) when a file holds several cycles;
- raw WRF output: a `Time` dimension with no values; the times are in `XTIME` (minutes since the start,
  decoded by xarray when its units say so) or in the character array `Times` ("2021-01-01_00:00:00"), and
  `XLAT` / `XLONG` are repeated at every time;
- anything else: the dimension a source's `time_dim` names.

Latitude and longitude that carry the time dimension (WRF's) are replaced by their first time: the grid of a
run does not move.
"""

import numpy as np
import pandas as pd
import xarray as xr

from corrdiff.errors import DataError

TIME = "time"
TIME_DIMS = (TIME, "valid_time", "Time")  # tried in this order when the spec gives no `time_dim`
LAT_NAMES = ("lat", "latitude", "XLAT", "nav_lat")
LON_NAMES = ("lon", "longitude", "XLONG", "nav_lon")
WRF_TIMES = ("XTIME", "Times")
WRF_TIME_FORMAT = "%Y-%m-%d_%H:%M:%S"


def canonical(ds: xr.Dataset, time_dim: str | None = None, file: str = "?") -> xr.Dataset:
    """`ds` with its time axis as a `time` dimension coordinate (when it has one) and a time-invariant grid."""
    if time_dim is None and "valid_time" in ds.variables:
        ds = _valid_time(ds)
    dim = _time_dim(ds, time_dim, file)
    if dim is not None:
        ds = _time_coordinate(ds, dim, file)
    return _fixed_grid(ds)


def _valid_time(ds: xr.Dataset) -> xr.Dataset:
    """Index by `valid_time` (reference time + lead time), whatever its shape, and drop `time` and `step`."""
    valid = ds["valid_time"]
    others = [name for name in (TIME, "step") if name in ds.variables and name not in valid.dims]
    if valid.ndim == 0:
        ds = ds.drop_vars(others).expand_dims("valid_time")
    elif valid.ndim == 1 and valid.dims != ("valid_time",):
        ds = ds.swap_dims({valid.dims[0]: "valid_time"})
        ds = ds.drop_vars([n for n in (TIME, "step") if n in ds.variables])
    elif valid.ndim == 2:  # several cycles × several steps: one axis of (cycle, step) pairs
        ds = ds.stack(forecast=valid.dims)
        ds = ds.drop_vars(["forecast", *valid.dims]).swap_dims(forecast="valid_time")
        ds = ds.drop_vars(others)
    return ds.rename(valid_time=TIME)


def _time_dim(ds: xr.Dataset, time_dim: str | None, file: str) -> str | None:
    if time_dim is None:
        return next((dim for dim in TIME_DIMS if dim in ds.dims), None)
    if time_dim not in ds.dims:
        raise DataError(f"{file}: time_dim {time_dim!r} is not a dimension of the file; it has dims "
                        f"{', '.join(map(str, ds.dims)) or 'none'}")
    return time_dim


def _time_coordinate(ds: xr.Dataset, dim: str, file: str) -> xr.Dataset:
    """Rename `dim` to `time` and give it dates: its own values if they are dates, else WRF's XTIME or Times."""
    own = ds[dim].values if dim in ds.coords else None
    times = own if own is not None and np.issubdtype(own.dtype, np.datetime64) else _wrf_times(ds, dim, file)
    if times is not None:
        ds = ds.drop_vars([name for name in WRF_TIMES if name in ds.variables])
    if dim != TIME:
        ds = ds.drop_vars([TIME] if TIME in ds.variables else []).rename({dim: TIME})
    return ds.assign_coords({TIME: times}) if times is not None else ds


def _wrf_times(ds: xr.Dataset, dim: str, file: str) -> np.ndarray | None:
    """Dates along `dim` from WRF's XTIME (when xarray decoded it) or its `Times` strings; None without either."""
    xtime = ds.variables.get("XTIME")
    if xtime is not None and xtime.dims == (dim,) and np.issubdtype(xtime.dtype, np.datetime64):
        return np.asarray(xtime.values)
    strings = ds.variables.get("Times")
    if strings is None or strings.dims[:1] != (dim,):
        return None
    text = np.asarray(strings.values)
    if text.ndim == 2:  # still one character per element (xarray joins them when it decodes char arrays)
        text = np.array([b"".join(row) for row in text])
    text = [t.decode() if isinstance(t, bytes) else str(t) for t in text]
    try:
        return pd.to_datetime(text, format=WRF_TIME_FORMAT).values
    except ValueError:
        raise DataError(f"{file}: Times holds {text[0]!r}, expected dates like 2021-01-01_00:00:00") from None


def _fixed_grid(ds: xr.Dataset) -> xr.Dataset:
    moving = [name for name in LAT_NAMES + LON_NAMES if name in ds.variables and TIME in ds[name].dims]
    if not moving:
        return ds
    first = {name: ds[name].isel({TIME: 0}, drop=True).reset_coords(drop=True) for name in moving}
    return ds.drop_vars(moving).assign_coords(first)
