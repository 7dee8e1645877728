"""The ensemble file: the one layout that `corrdiff generate` writes and the baselines and evaluation read.

CF-1.11 NetCDF, or a Zarr v3 store (a path ending in .zarr):

    <name>(time, member, y, x)     float32, physical units   one variable per channel
    <name>_regression(time, y, x)  float32, physical units   the regression mean (generate's files only)
    generation_complete(time)      int8, 0 pending, 1 written  set once every field of the time is written
    lat(y, x), lon(y, x)           float64, degrees_north / degrees_east
    time                           encoded as hours since 1970-01-01 00:00:00 (proleptic Gregorian)
    member                         int32, standard_name realization; y, x: int32 grid indices
    projection_x(x), projection_y(y)  with `crs`: the grid's projection coordinates, m
    forecast_reference_time(time)  when the input is a forecast: its initialisation time (encoded as time)
    lead_time(time)                and its lead time, float64 hours (standard_name forecast_period)
    crs                            when the fine grid has a projection: its CF grid mapping (0-D int32)
    series_start(time)             members as time series only (generate.coherence): int8, 1 where a series of
                                   the members' starting noise starts (the first time, and after a gap), else 0;
                                   with global attributes corrdiff_coherence (the method) and corrdiff_coherence_rho

Chunks: one time × one member × the whole field for each channel (one time × the field for the regression mean):
each write of a time, and each read of one member's field, touches whole chunks (benchmarks/bench_netcdf.py).
Every channel variable has a `long_name` and, for a quantity CF names, a `standard_name`: the target files' own
attributes where they give them, else `corrdiff.data.cf_names`' table (an unknown channel is named by itself).
Coordinates have no _FillValue. Global attributes: Conventions, title, grid_spacing_km (mean neighbour
distance) and history, then the writer's own.
This module imports nothing from corrdiff but its errors and the CF names table, so that inference and
evaluation can both use it.
"""

import datetime as dt
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from corrdiff.data.canonical import CONVENTIONS, GRID_MAPPING  # the CF version and projection variable we write
from corrdiff.data.cf_names import with_cf_names
from corrdiff.errors import EvaluationError
from corrdiff.file_integrity import atomic_file

ENSEMBLE_DIMS = ("time", "member", "y", "x")
FIELD_DIMS = ("time", "y", "x")  # a regression mean; also truth and plain forecast fields
REGRESSION_SUFFIX = "_regression"
FLAG = "generation_complete"
FLAG_ATTRS = {"long_name": "whether every field of the time is written", "flag_values": np.array([0, 1], dtype="int8"),
              "flag_meanings": "pending written"}
TIME_UNITS = "hours since 1970-01-01 00:00:00"
TIME_ENCODING = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "float64"}
REFERENCE_TIME = "forecast_reference_time"  # encoded as `time` is
TEMPERATURE_UNITS = ("K", "degC", "degree_Celsius", "celsius", "degF")  # these get units_metadata (CF 1.11)
ENGINES = {"netcdf": "netcdf4", "zarr": "zarr"}  # format name (as in the run config) -> xarray engine
# Read as dask chunks of one time × every member (what scores reduce over), the store's chunks along the rest.
OPEN_CHUNKS = {"member": -1}
SUFFIXES = {".zarr": "zarr", ".nc": "netcdf", ".nc4": "netcdf"}  # the format a file name implies
SERIES_START = "series_start"
SERIES_START_ATTRS = {"long_name": "whether a series of the members' starting noise starts at this time (the first "
                      "time, or the first after a gap in time)", "flag_values": np.array([0, 1], dtype="int8"),
                      "flag_meanings": "continues_series starts_series"}


def regression_name(name: str) -> str:
    """The name of the regression-mean variable of channel `name`."""
    return f"{name}{REGRESSION_SUFFIX}"


def grid_spacing_km(lat: np.ndarray, lon: np.ndarray) -> float:
    """Mean distance between neighbouring grid points (haversine, Earth radius 6371 km) of 2-D lat/lon."""
    def dist(lat1, lon1, lat2, lon2):
        p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
        h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
        return 2 * 6371.0 * np.arcsin(np.sqrt(h))

    dx = dist(lat[:, :-1], lon[:, :-1], lat[:, 1:], lon[:, 1:]) if lat.shape[1] > 1 else np.array([np.nan])
    dy = dist(lat[:-1], lon[:-1], lat[1:], lon[1:]) if lat.shape[0] > 1 else np.array([np.nan])
    return float(np.nanmean(np.concatenate([dx.ravel(), dy.ravel()])))


def is_zarr(path: Path) -> bool:
    """Whether `path` names a Zarr store (by suffix, or by the metadata of an existing folder)."""
    path = Path(path)
    return path.suffix == ".zarr" or (path.is_dir() and any((path / n).exists() for n in ("zarr.json", ".zgroup")))


def format_of(path: Path) -> str:
    """"zarr" for a Zarr store, else "netcdf"."""
    return "zarr" if is_zarr(path) else "netcdf"


def format_from_suffix(path: Path) -> str | None:
    """The format the suffix of `path` names (SUFFIXES, any case), or None for another suffix."""
    return SUFFIXES.get(Path(path).suffix.lower())


def series_step(times) -> np.timedelta64 | None:
    """The step of `times`' series (datetime64, sorted): the most common positive step between consecutive times
    (the smaller one on a tie); None when no two times follow each other."""
    steps = np.diff(np.asarray(times, dtype="datetime64[ns]"))
    positive = steps[steps > np.timedelta64(0, "ns")]
    if positive.size == 0:
        return None
    values, counts = np.unique(positive, return_counts=True)  # sorted: argmax takes the smaller step on a tie
    return values[np.argmax(counts)]


def series_starts(times, reference=None) -> np.ndarray:
    """Whether each of `times` (datetime64, sorted) starts a series of consecutive times: (time,) booleans. A
    series is a run of times `series_step` apart; any other step (a missing time) starts a new one, and so does a
    change of `reference` (time,), a forecast's reference time. Generation (members that are time series) and the
    scores of time both follow this rule."""
    times = np.asarray(times, dtype="datetime64[ns]")
    step = series_step(times)
    joined = np.diff(times) == step if step is not None else np.zeros(max(len(times) - 1, 0), dtype=bool)
    if reference is not None:
        reference = np.asarray(reference)
        joined &= reference[1:] == reference[:-1]
    return np.concatenate([[True], ~joined]) if len(times) else np.zeros(0, dtype=bool)


def series_coords(starts) -> dict:
    """The `series_start` coordinate along time, for `template`'s `coords`: `starts` (time,) booleans."""
    return {SERIES_START: (("time",), np.asarray(starts, dtype="int8"), dict(SERIES_START_ATTRS))}


def coherence_attrs(method: str, rho: float | list[float]) -> dict:
    """The global attributes of an ensemble whose members are time series: the method and its rho."""
    return {"corrdiff_coherence": str(method),
            "corrdiff_coherence_rho": [float(v) for v in rho] if isinstance(rho, list) else float(rho)}


def template(times, members: int, lat, lon, channels, channel_attrs: dict | None = None,
             global_attrs: dict | None = None, *, regression: bool = True, complete: bool = False,
             command: str = "corrdiff generate", coords: dict | None = None,
             grid_mapping: dict | None = None) -> xr.Dataset:
    """An all-NaN dataset with the file's layout: lazy (dask), one time per chunk.

    `channel_attrs`: {name: attrs} (units, long_name, standard_name; `with_cf_names` fills in the names they lack).
    `regression`: add `<name>_regression`.
    `complete`: the flag is 1 everywhere (a file written whole, as the baselines are); else 0.
    `command` goes into the history attribute; `global_attrs` are added last and win.
    `coords`: extra coordinates {name: (dims, values, attrs)}: the forecast context along ("time",), projection
    coordinates along ("x",) / ("y",); the fields' `coordinates` attribute names them.
    `grid_mapping`: CF grid-mapping attributes of the fine grid's projection, kept as the variable `crs` (CF needs
    its projection_x/y_coordinate among `coords`).
    """
    n_time, (height, width) = len(times), np.shape(lat)
    channel_attrs, coords = channel_attrs or {}, dict(coords or {})
    mapped = {"grid_mapping": GRID_MAPPING} if grid_mapping else {}
    data_vars = {}
    for name in channels:
        attrs = {"coordinates": " ".join(["lat", "lon", *coords]), **with_cf_names(name, channel_attrs.get(name, {})),
                 **mapped}
        if str(attrs.get("units", "")) in TEMPERATURE_UNITS:
            attrs.setdefault("units_metadata", "temperature: on_scale")
        data_vars[name] = (ENSEMBLE_DIMS, da.full((n_time, members, height, width), np.nan, dtype="float32",
                                                  chunks=(1, members, height, width)), attrs)
        if regression:
            reg_attrs = dict(attrs, long_name=f"regression mean of {attrs.get('long_name', name)}")
            data_vars[regression_name(name)] = (FIELD_DIMS, da.full((n_time, height, width), np.nan, dtype="float32",
                                                                    chunks=(1, height, width)), reg_attrs)
    flag = da.ones(n_time, dtype="int8", chunks=1) if complete else da.zeros(n_time, dtype="int8", chunks=1)
    data_vars[FLAG] = (("time",), flag, dict(FLAG_ATTRS))
    coords = {
        "time": ("time", np.asarray(times, dtype="datetime64[ns]"),
                 {"standard_name": "time", "long_name": "time", "axis": "T", "units_metadata": "leap_seconds: none"}),
        "member": ("member", np.arange(members, dtype="int32"),
                   {"standard_name": "realization", "long_name": "ensemble member", "units": "1"}),
        # Grid indices: neither projection coordinates nor lat/lon, so no `axis` or `units` (CF 4.1, 4.2).
        "y": ("y", np.arange(height, dtype="int32"), {"long_name": "grid row index"}),
        "x": ("x", np.arange(width, dtype="int32"), {"long_name": "grid column index"}),
        "lat": (("y", "x"), np.asarray(lat, dtype="float64"),
                {"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude"}),
        "lon": (("y", "x"), np.asarray(lon, dtype="float64"),
                {"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude"}),
        **coords,
        **({GRID_MAPPING: ((), np.int32(0), {"long_name": "projection of the fine grid", **grid_mapping})}
           if grid_mapping else {}),
    }
    attrs = {"Conventions": CONVENTIONS, "title": "downscaled ensemble",
             "grid_spacing_km": grid_spacing_km(np.asarray(lat), np.asarray(lon)),
             "history": f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} {command}",
             **(global_attrs or {})}
    return xr.Dataset(data_vars, coords, attrs)


def field_chunks(ds: xr.Dataset, name: str) -> tuple[int, ...]:
    """The chunk shape of a field variable: 1 along time and member, the whole extent along the others."""
    return tuple(1 if dim in ("time", "member") else ds.sizes[dim] for dim in ds[name].dims)


def encoding(ds: xr.Dataset, fmt: str) -> dict:
    """The encoding to write `ds` with: time in TIME_UNITS; no _FillValue on coordinates; fields chunked by
    `field_chunks`; in NetCDF also zlib level 1 and a NaN fill."""
    encoded = {name: {"_FillValue": None} for name in ds.coords}
    for name in ("time", REFERENCE_TIME):
        if name in ds.coords:
            encoded[name] = {**TIME_ENCODING, "_FillValue": None}
    fields = [v for v in ds.data_vars if v != FLAG and "time" in ds[v].dims]
    if fmt == "netcdf":
        encoded.update({v: {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan),
                            "chunksizes": field_chunks(ds, v)} for v in fields})
    else:
        encoded.update({v: {"chunks": field_chunks(ds, v)} for v in fields})
    return encoded


def write(ds: xr.Dataset, path, fmt: str) -> Path:
    """Write `ds` whole ("netcdf" or "zarr"; dask arrays chunk by chunk); returns the path.

    Written to a hidden temporary name and renamed (`corrdiff.file_integrity.atomic_file`): the file appears
    complete, or not at all; one already at `path` (a NetCDF file or a Zarr store) is replaced only then.
    """
    path = Path(path)
    with atomic_file(path) as tmp:  # a full disk, say: no half-written temporary is left behind
        if fmt == "zarr":
            ds.to_zarr(tmp, mode="w", encoding=encoding(ds, fmt), zarr_format=3, consolidated=False)
        else:
            ds.to_netcdf(tmp, engine=ENGINES["netcdf"], encoding=encoding(ds, fmt))
    return path


def open(path) -> xr.Dataset:  # noqa: A001  (used as ensemble_file.open)
    """A NetCDF file or Zarr store, opened lazily (dask, OPEN_CHUNKS); `encoding["source"]` is the path.

    Raises EvaluationError naming the path when it is missing or neither NetCDF nor Zarr.
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or store")
    try:
        if is_zarr(path):
            with warnings.catch_warnings():  # unconsolidated stores (written by several processes) are fine
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated", RuntimeWarning)
                ds = xr.open_zarr(path, consolidated=None, chunks=OPEN_CHUNKS)
        else:
            ds = xr.open_dataset(path, chunks=OPEN_CHUNKS)
    except (OSError, ValueError) as err:
        text = " ".join(str(err).split())
        if "did not find a match in any of xarray's currently installed IO backends" in text:
            text = "the file is of no format xarray knows"
        raise EvaluationError(f"{path}: cannot be opened as NetCDF or Zarr ({text})") from None
    ds.encoding["source"] = str(path)
    return ds


def ensemble_variables(ds: xr.Dataset) -> list[str]:
    """Names of the variables with dims ENSEMBLE_DIMS (in any order)."""
    return [name for name, v in ds.data_vars.items() if set(v.dims) == set(ENSEMBLE_DIMS)]


def validate(ds: xr.Dataset, path) -> None:
    """Check that `ds` (read from `path`) has the layout; raises EvaluationError naming the file and the fault.

    The flag and lat/lon may be absent (every time then counts as written; the grid spacing comes from the
    attribute), but when present they must have their dims.
    """
    names = ensemble_variables(ds)
    if not names:
        raise EvaluationError(f"{path}: no variable with dims {ENSEMBLE_DIMS}; is it a file written "
                              "by `corrdiff generate` or `corrdiff baseline`?")
    for name in names:
        mean = regression_name(name)
        if mean in ds and set(ds[mean].dims) != set(FIELD_DIMS):
            raise EvaluationError(f"{path}: the regression mean {mean!r} has dims {ds[mean].dims}; "
                                  f"expected {FIELD_DIMS}")
    if FLAG in ds and ds[FLAG].dims != ("time",):
        raise EvaluationError(f"{path}: the flag {FLAG!r} has dims {ds[FLAG].dims}; expected ('time',)")
    for coord in ("lat", "lon"):
        if coord in ds.variables and set(ds[coord].dims) != {"y", "x"}:
            raise EvaluationError(f"{path}: {coord} has dims {ds[coord].dims}; expected 2-D ('y', 'x')")


def complete_times(ds: xr.Dataset) -> xr.Dataset:
    """`ds` at the times whose flag is set, without the flag (all times when it has no flag)."""
    if FLAG not in ds:
        return ds
    done = np.asarray(ds[FLAG].values, dtype=bool)
    complete = ds.isel(time=np.flatnonzero(done)).drop_vars(FLAG)
    complete.set_close(ds.close)  # xarray does not pass close() on, and an open file blocks a later writer
    return complete
