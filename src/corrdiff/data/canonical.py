"""One form for every opened store: a `time` dimension of valid times (datetime64) and a grid fixed in time.

Sources name and lay out time differently; each file is brought to that form as it is opened:

- most NetCDF / Zarr: a `time` dimension coordinate (kept);
- ERA5 from the CDS (since 2024): a `valid_time` dimension, with `number` and `expver` beside it;
- cfgrib (GRIB): a reference `time`, a lead `step` and their sum `valid_time`, which is 0-D (one field), 1-D over
  `time` (analyses) or `step` (one forecast), or 2-D over (`time`, `step`) when a file holds several cycles.
  A forecast keeps its context as coordinates along the valid times: `forecast_reference_time` (datetime64)
  and `lead_time` (float64 hours, CF `forecast_period`; 0 for a GRIB analysis), whenever the file has a `step`;
- raw WRF output: a `Time` dimension with no values; the times are in `XTIME` (minutes since the start,
  decoded by xarray when its units say so) or in the character array `Times` ("2021-01-01_00:00:00"), and
  `XLAT` / `XLONG` are repeated at every time;
- anything else: the dimension a source's `time_dim` names.

Latitude and longitude that carry the time dimension (WRF's) are replaced by their first time when they are the
same at every time; when they change (a moving nest) they keep the time dimension, and
`corrdiff.data.moving_grids` decides what that means for inputs, targets and static fields. `grid_mapping(ds)` gives the CF grid mapping of a file's grid: WRF's projection
(`MAP_PROJ`, `TRUELAT1`, ... global attributes) or the variable a CF file's `grid_mapping` attribute names.
"""

import numpy as np
import pandas as pd
import xarray as xr

from corrdiff.data.moving_grids import moves
from corrdiff.errors import DataError

TIME = "time"
TIME_DIMS = (TIME, "valid_time", "Time")  # tried in this order when the spec gives no `time_dim`
LAT_NAMES = ("lat", "latitude", "XLAT", "nav_lat")
LON_NAMES = ("lon", "longitude", "XLONG", "nav_lon")
WRF_TIMES = ("XTIME", "Times")
WRF_TIME_FORMAT = "%Y-%m-%d_%H:%M:%S"
REFERENCE_TIME, LEAD_TIME = "forecast_reference_time", "lead_time"  # a forecast's context along `time`
REFERENCE_TIME_ATTRS = {"standard_name": "forecast_reference_time", "long_name": "forecast reference time"}
LEAD_TIME_ATTRS = {"standard_name": "forecast_period", "long_name": "lead time", "units": "hours"}
WRF_EARTH_RADIUS = 6370000.0  # m: WRF's sphere
CONVENTIONS = "CF-1.11"  # of the files corrdiff writes (ensembles, coarsened inputs)
GRID_MAPPING = "crs"  # the 0-D variable holding a written grid's projection, when it has one
# The attributes of the projection coordinates that `projected_xy` gives, beside a grid mapping in an output.
PROJECTION_ATTRS = {"x": {"standard_name": "projection_x_coordinate", "long_name": "x in the grid's projection",
                          "units": "m"},
                    "y": {"standard_name": "projection_y_coordinate", "long_name": "y in the grid's projection",
                          "units": "m"}}


def canonical(ds: xr.Dataset, time_dim: str | None = None, file: str = "?", settle_grid: bool = True) -> xr.Dataset:
    """`ds` with its time axis as a `time` dimension coordinate (when it has one), and lat/lon without time when
    they do not move (`settle_grid`; False for one of several files, settled once they are combined)."""
    if time_dim is None and "valid_time" in ds.variables:
        ds = _valid_time(ds)
    dim = _time_dim(ds, time_dim, file)
    if dim is not None:
        ds = _time_coordinate(ds, dim, file)
    return settled_grid(ds) if settle_grid else ds


def _valid_time(ds: xr.Dataset) -> xr.Dataset:
    """Index by `valid_time` (reference time + lead time), whatever its shape; with a `step`, `time` and `step`
    become the forecast context (`forecast_reference_time`, `lead_time` along the valid times), else they go."""
    valid = ds["valid_time"]
    if valid.ndim == 0:
        ds = ds.expand_dims("valid_time")
    elif valid.ndim == 1 and valid.dims != ("valid_time",):
        ds = ds.swap_dims({valid.dims[0]: "valid_time"})
    elif valid.ndim == 2:  # several cycles × several steps: one axis of (cycle, step) pairs
        ds = ds.stack(forecast=valid.dims).reset_index("forecast")  # `time` and `step` stay, along the pairs
        ds = ds.drop_vars([n for n in ("forecast",) if n in ds.variables]).swap_dims(forecast="valid_time")
    context = {}
    if "step" in ds.variables and TIME in ds.variables and np.issubdtype(ds[TIME].dtype, np.datetime64):
        reference = ds[TIME].broadcast_like(ds["valid_time"]).values.astype("datetime64[ns]")
        lead = (ds["valid_time"].values.astype("datetime64[ns]") - reference) / np.timedelta64(1, "h")
        context = {REFERENCE_TIME: ("valid_time", reference, dict(REFERENCE_TIME_ATTRS)),
                   LEAD_TIME: ("valid_time", lead.astype("float64"), dict(LEAD_TIME_ATTRS))}
    ds = ds.drop_vars([name for name in (TIME, "step") if name in ds.variables])
    return ds.assign_coords(context).rename(valid_time=TIME)


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


def settled_grid(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with lat/lon that carry the time dimension replaced by their first time if they are the same at every
    time; kept along time (as coordinates) if they move."""
    timed = [name for name in LAT_NAMES + LON_NAMES if name in ds.variables and TIME in ds[name].dims]
    if not timed:
        return ds
    lat = next((ds[n] for n in LAT_NAMES if n in timed), None)
    lon = next((ds[n] for n in LON_NAMES if n in timed), None)
    if lat is not None and lon is not None and lat.sizes[TIME] > 1:
        order = [TIME] + [d for d in lat.dims if d != TIME]
        if moves(np.asarray(lat.transpose(*order).values, np.float64), np.asarray(lon.transpose(*order).values,
                                                                                   np.float64)):
            return ds.set_coords(timed)
    first = {name: ds[name].isel({TIME: 0}, drop=True).reset_coords(drop=True) for name in timed}
    return ds.drop_vars(timed).assign_coords(first)


def grid_mapping(ds: xr.Dataset) -> dict | None:
    """CF grid-mapping attributes of the grid of `ds`; None for a plain lat/lon grid or an unknown projection.

    WRF: MAP_PROJ 1 (Lambert conformal), 2 (polar stereographic), 3 (Mercator) with TRUELAT1/TRUELAT2,
    STAND_LON and MOAD_CEN_LAT (else CEN_LAT), on WRF's sphere of radius 6370 km. A CF file: the attributes of
    the variable that its data variables' `grid_mapping` attribute names.
    """
    named = {str(v.attrs["grid_mapping"]).split(":")[0].strip() for v in ds.data_vars.values()
             if "grid_mapping" in v.attrs}
    for name in sorted(named):
        if name in ds.variables and "grid_mapping_name" in ds[name].attrs:
            return dict(ds[name].attrs)
    return wrf_grid_mapping(ds.attrs)


def wrf_grid_mapping(attrs) -> dict | None:
    """CF grid-mapping attributes for WRF's projection global attributes; None without a projection WRF names."""
    try:
        proj = int(attrs.get("MAP_PROJ", 0))
        truelat1, stand_lon = float(attrs["TRUELAT1"]), float(attrs["STAND_LON"])
        truelat2 = float(attrs.get("TRUELAT2", truelat1))
        origin = float(attrs.get("MOAD_CEN_LAT", attrs.get("CEN_LAT", truelat1)))
    except (KeyError, TypeError, ValueError):
        return None
    common = {"earth_radius": WRF_EARTH_RADIUS, "false_easting": 0.0, "false_northing": 0.0}
    if proj == 1:
        parallels = truelat1 if np.isclose(truelat1, truelat2) else [truelat1, truelat2]
        return {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": parallels,
                "longitude_of_central_meridian": stand_lon, "latitude_of_projection_origin": origin, **common}
    if proj == 2:
        return {"grid_mapping_name": "polar_stereographic", "straight_vertical_longitude_from_pole": stand_lon,
                "latitude_of_projection_origin": 90.0 if truelat1 >= 0 else -90.0, "standard_parallel": truelat1,
                **common}
    if proj == 3:
        return {"grid_mapping_name": "mercator", "longitude_of_projection_origin": stand_lon,
                "standard_parallel": truelat1, **common}
    return None


def projected_xy(mapping: dict, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Projection coordinates x (W,) and y (H,), m, of a grid (H, W) of degrees under a CF `mapping`
    (the spherical forms of Snyder 1987, eqs. 15-1, 21-1, 7-1); None for another mapping.

    Each is the mean over the other axis: a WRF grid is regular in its projection, so rows share their y.
    """
    name, radius = mapping.get("grid_mapping_name"), float(mapping.get("earth_radius", WRF_EARTH_RADIUS))
    phi, lam = np.radians(np.asarray(lat, np.float64)), np.radians(np.asarray(lon, np.float64))
    parallels = np.radians(np.atleast_1d(np.asarray(mapping.get("standard_parallel", np.nan), np.float64)))
    t = lambda p: np.tan(np.pi / 4 + p / 2)
    if name == "lambert_conformal_conic":
        lam0, phi0 = (np.radians(float(mapping[k])) for k in ("longitude_of_central_meridian",
                                                              "latitude_of_projection_origin"))
        p1, p2 = parallels[0], parallels[-1]
        n = np.sin(p1) if np.isclose(p1, p2) else np.log(np.cos(p1) / np.cos(p2)) / np.log(t(p2) / t(p1))
        big_f = np.cos(p1) * t(p1) ** n / n
        rho, rho0 = radius * big_f / t(phi) ** n, radius * big_f / t(phi0) ** n
        theta = n * _wrapped(lam - lam0)
        x, y = rho * np.sin(theta), rho0 - rho * np.cos(theta)
    elif name == "polar_stereographic":
        lam0 = np.radians(float(mapping["straight_vertical_longitude_from_pole"]))
        south = float(mapping["latitude_of_projection_origin"]) < 0
        sign = -1.0 if south else 1.0
        rho = radius * (1 + np.sin(sign * parallels[0])) * np.tan(np.pi / 4 - sign * phi / 2)
        x, y = rho * np.sin(lam - lam0), -sign * rho * np.cos(lam - lam0)
    elif name == "mercator":
        lam0 = np.radians(float(mapping["longitude_of_projection_origin"]))
        scale = radius * np.cos(parallels[0])
        x, y = scale * _wrapped(lam - lam0), scale * np.log(t(phi))
    else:
        return None
    return x.mean(axis=0), y.mean(axis=1)


def _wrapped(radians: np.ndarray) -> np.ndarray:
    return (radians + np.pi) % (2 * np.pi) - np.pi
