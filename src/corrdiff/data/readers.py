"""Opening the user's stores with xarray and picking variables, levels, grids and times out of them.

Every store is opened read-only and lazily (nothing is loaded until a time is asked for), and brought to one
form as it is opened (`corrdiff.data.canonical`: a `time` axis of valid times, a grid fixed in time); GRIB files
are opened one level group at a time (`corrdiff.data.grib`). Channels are looked up by their name in the files
(`Source.in_files`: the spec's `rename`). Two layouts are understood:

- generic: any NetCDF / Zarr / GRIB files, one variable per field, optionally with a vertical dimension
  (raw WRF output and ERA5 as the CDS delivers it included);
- cwa: the single Zarr store of the CorrDiff Taiwan dataset, with channel-stacked arrays (`era5`, `cwb`)
  of dims (time, channel, south_north, west_east), channel names in `<array>_variable`, pressure levels in
  `<array>_pressure`, and 2-D `XLAT` / `XLONG`.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from corrdiff.data import grib, moving_grids, remote, units
from corrdiff.data.canonical import canonical, grid_mapping, LAT_NAMES, LON_NAMES, settled_grid
from corrdiff.data.spec import COLUMN_MAX, DatasetSpec, parse_variable, Source
from corrdiff.errors import CorrdiffError, DataError
from corrdiff.file_integrity import is_url

log = logging.getLogger(__name__)

# bottom_top: WRF's model levels, which have no coordinate: `REFL_10CM@0` is the lowest (an index).
ENSEMBLE_DIMS = ("number", "member", "realization", "ensemble_member")  # cfgrib / CDS, CF, ...
LEVEL_NAMES = ("level", "isobaricInhPa", "pressure_level", "plev", "lev", "pressure", "bottom_top")
SHOWN_NAMES = 80  # a not-found error lists at most this many of the file's variables
GRIB_SUFFIXES = (".grib", ".grb", ".grib2", ".grb2")
# Spellings of the same CF unit (evaluation/stores.py matches forecast and truth units by them; the data
# itself is converted with `corrdiff.data.units`).
UNIT_ALIASES = {"m/s": "m s-1", "m s**-1": "m s-1", "ms-1": "m s-1", "kelvin": "K", "degk": "K",
                "1/s": "s-1", "s**-1": "s-1", "dimensionless": "1", "": "1", "degrees_c": "degC",
                "celsius": "degC", "pa": "Pa", "mm/h": "mm h-1", "kg m**-2 s**-1": "kg m-2 s-1"}
TRAINED_UNITS = "the units the model was trained with"  # where a checkpoint's expected units come from


@dataclass
class Field:
    """One channel: a lazy (time, y, x) array (or (y, x) for static fields) with where it came from."""

    name: str
    array: xr.DataArray
    file: str
    lat: np.ndarray  # 1-D (y,) on a rectilinear grid, else 2-D (y, x)
    lon: np.ndarray
    times: "pd.Index | None" = None  # set by PairedFields: the time axis, for exact matching
    units_assumed: bool = False  # the file gave no `units`: the expected units were assumed
    mapping: dict | None = None  # CF grid mapping of a 2-D lat/lon grid, when the file names one (WRF's, CF's)
    window: "object | None" = None  # moving_grids.Window: the fixed window cut from a moving grid at each time
    members: tuple | None = None  # `member: all`: the input members' labels (the array holds the first one)

    @property
    def grid_shape(self) -> tuple:
        """(y, x) of the values read: the moving grid's window, else the array's own grid."""
        return (self.window.height, self.window.width) if self.window is not None else tuple(self.array.shape[-2:])

    @property
    def attrs(self) -> dict:
        return {k: str(v) for k, v in self.array.attrs.items() if k in ("units", "long_name", "standard_name")}


def engine_for(path: Path | str) -> str | None:
    if is_url(path):  # stores by URL are read as Zarr (corrdiff.data.remote)
        return "zarr"
    if path.suffix.lower() == ".zarr" or (path.is_dir() and (path / "zarr.json").exists()) \
            or (path.is_dir() and (path / ".zgroup").exists()):
        return "zarr"
    if path.suffix.lower() in GRIB_SUFFIXES or _starts_with(path, b"GRIB"):  # GFS names have no suffix
        return "cfgrib"
    return None  # NetCDF and friends: xarray picks netCDF4 or h5netcdf


def _starts_with(path: Path, magic: bytes) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as stream:
        return stream.read(len(magic)) == magic


def files_label(files: list[Path]) -> str:
    return ", ".join(str(f) for f in files[:3]) + (" …" if len(files) > 3 else "")


def single_engine(files: list[Path], what: str) -> str | None:
    engines = {engine_for(f) for f in files}
    if len(engines) > 1:
        raise DataError(f"{what}: mixes file formats ({', '.join(str(f) for f in files[:3])} …); use one format")
    return engines.pop()


def open_files(files: list[Path | str], what: str, time_dim: str | None = None, keep: set[str] | None = None,
               storage_options: dict | None = None) -> xr.Dataset:
    """The files of one source opened as one lazy dataset (times concatenated, variables merged), in canonical
    form; with `keep`, only those variables (and the grid) are kept from each file, which makes globs of files
    with hundreds of variables (wrfout) quick to combine. `what` names the source in errors. URLs (str) are Zarr
    stores read through fsspec with `storage_options` (`corrdiff.data.remote`)."""
    engine = single_engine(files, what)
    kwargs = {"engine": engine, "decode_timedelta": False}
    if engine == "cfgrib":
        kwargs["backend_kwargs"] = {"indexpath": ""}  # cfgrib would otherwise write .idx files beside the data
    names: set[str] = set()  # every variable of every file, for the errors
    prepare = partial(_prepare, time_dim, keep, names, len(files) == 1)
    if any(is_url(f) for f in files):
        ds = remote.open_urls([str(f) for f in files], what, prepare, storage_options)
        ds = ds if len(files) == 1 else settled_grid(ds)
        ds.encoding["corrdiff_files"] = files_label(files)
        ds.encoding["corrdiff_names"] = sorted(names)
        return ds
    try:
        with grib.quiet_cfgrib():
            if len(files) == 1:
                ds = prepare(xr.open_dataset(files[0], chunks=None, **kwargs))
            else:
                ds = settled_grid(xr.open_mfdataset(files, combine="by_coords", data_vars="minimal",
                                                    coords="minimal", compat="override", join="outer",
                                                    preprocess=prepare, **kwargs))
    except (OSError, ValueError, KeyError, ImportError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{what}: cannot open {files[0]}{' …' if len(files) > 1 else ''}: "
                        f"{unreadable(files, err)}") from None
    ds.encoding["corrdiff_files"] = files_label(files)
    ds.encoding["corrdiff_names"] = sorted(names)
    return ds


def file_grid_mapping(path: Path | str, storage_options: dict | None = None) -> dict | None:
    """CF grid-mapping attributes of the grid of one file (`canonical.grid_mapping`); None for GRIB, whose grids
    are read as lat/lon, or when the file cannot be read (with a warning: only the projection is lost). A URL is
    opened through `corrdiff.data.remote` with `storage_options`."""
    engine = engine_for(path if is_url(path) else Path(path))
    if engine == "cfgrib":
        return None  # GRIB grids are read as lat/lon
    try:
        opened = remote.open_store(path, "grid", storage_options) if is_url(path) else \
            xr.open_dataset(path, engine=engine, decode_times=False, chunks=None)
        with opened as ds:
            return grid_mapping(ds)
    except (OSError, ValueError) as err:  # the dataset read this file already: a second failure loses only this
        log.warning(f"{path}: the grid's projection could not be read ({err}); the output has none")
        return None


def unreadable(files: list[Path], err: Exception) -> str:
    """Why xarray could not open `files`, in one line: an empty file, a file of no format it knows, or its error."""
    empty = [f for f in files if f.is_file() and f.stat().st_size == 0]
    if empty:
        return f"{empty[0]} is empty (0 bytes); download or write it again"
    text = " ".join(str(err).split()) or type(err).__name__
    if "did not find a match in any of xarray's currently installed IO backends" in text:
        folder = " (a folder: a Zarr store needs its zarr.json or .zgroup)" if any(f.is_dir() for f in files) else ""
        return f"not a NetCDF, Zarr or GRIB file{folder}; give the data files themselves (or a glob)"
    if any(f.is_dir() and not any(f.iterdir()) for f in files):
        return "an empty folder, not a Zarr store (no zarr.json or .zgroup); write the store again"
    if "NetCDF: HDF error" in text or "NetCDF: Unknown file format" in text:
        return f"the file is damaged or cut short ({text}); download or write it again"
    if isinstance(err, json.JSONDecodeError):
        return f"its Zarr metadata is not valid JSON ({text}); write the store again"
    return text


def _prepare(time_dim: str | None, keep: set[str] | None, names: set[str], alone: bool, ds: xr.Dataset) -> xr.Dataset:
    """One file in canonical form, reduced to the variables in `keep` (all when None) and the grid; the grid is
    settled (`canonical.settled_grid`) when the file is `alone`, else once the files are combined, so that a
    grid moving from file to file is seen."""
    names.update(map(str, ds.data_vars))
    ds = canonical(ds, time_dim, str(ds.encoding.get("source", "?")), settle_grid=alone)
    if keep is None:
        return ds
    mappings = {str(ds[v].attrs["grid_mapping"]).split(":")[0].strip() for v in keep
                if v in ds.data_vars and "grid_mapping" in ds[v].attrs}  # a CF projection variable stays too
    return ds.drop_vars([v for v in ds.data_vars if v not in keep | mappings and v not in LAT_NAMES + LON_NAMES])


def _find(names, candidates, what: str, file: str, required: bool = True):
    for name in candidates:
        if name in names:
            return name
    if required:
        raise DataError(f"{file}: {what}: expected a coordinate named one of {list(candidates)}")
    return None


def grid_names(ds: xr.Dataset, file: str, what: str) -> tuple[str, str, str, str]:
    """(lat name, lon name, y_dim, x_dim) of the grid of `ds`; lat/lon 1-D for rectilinear grids, 2-D for
    curvilinear ones, and 3-D with `time` for a grid that moves with time (`corrdiff.data.moving_grids`)."""
    names = set(ds.coords) | set(ds.data_vars)
    lat_name = _find(names, LAT_NAMES, f"{what} latitude", file)
    lon_name = _find(names, LON_NAMES, f"{what} longitude", file)
    lat, lon = ds[lat_name], ds[lon_name]
    if lat.ndim == 1 and lon.ndim == 1:
        return lat_name, lon_name, lat.dims[0], lon.dims[0]
    if lat.ndim in (2, 3) and lon.shape == lat.shape and lat.dims == lon.dims:
        y_dim, x_dim = [d for d in lat.dims if d != "time"][-2:]
        return lat_name, lon_name, y_dim, x_dim
    raise DataError(f"{file}: {what}: latitude {lat_name}{lat.dims} and longitude {lon_name}{lon.dims} "
                    "must be both 1-D or both 2-D on the same dims")


def horizontal_coords(ds: xr.Dataset, array: xr.DataArray, file: str, what: str):
    """(lat, lon, y_dim, x_dim) of a field; lat/lon 1-D for rectilinear grids, 2-D for curvilinear ones, and
    (time, y, x) for a grid that moves with time (`corrdiff.data.moving_grids`)."""
    lat_name, lon_name, y_dim, x_dim = grid_names(ds, file, what)
    lat, lon = ds[lat_name], ds[lon_name]
    if lat.ndim == 3 and "time" in lat.dims:
        lat, lon = (c.transpose("time", y_dim, x_dim) for c in (lat, lon))
    missing = {y_dim, x_dim} - set(array.dims)
    if missing:
        raise DataError(f"{file}: {what} {array.name!r} has dims {array.dims}, expected the grid dims "
                        f"({y_dim}, {x_dim}) of its {lat_name}/{lon_name} coordinates")
    return np.asarray(lat.values, dtype=np.float64), np.asarray(lon.values, dtype=np.float64), y_dim, x_dim


def in_expected_units(spec: DatasetSpec, name: str, array: xr.DataArray, file: str, what: str,
                      expected: dict[str, str] | None = None, in_files: str | None = None):
    """(array in the units channel `name` is expected in, whether they were assumed): converted when its CF
    `units` differ but are compatible, a DataError when they are not (`corrdiff.data.units`).

    `expected` (channel: units, e.g. a checkpoint's trained units) overrides the spec's `units`; an empty
    entry means unknown, and then the spec's `units` (by channel, else base name) apply, if any.
    """
    wanted = (expected or {}).get(name)
    origin = TRAINED_UNITS
    if not wanted:
        wanted, origin = spec.units.get(name, spec.units.get(parse_variable(name)[0])), "the spec's `units`"
    return units.to_expected(array, wanted, name=name, file=file, what=what, origin=origin, in_files=in_files)


def select_level(array: xr.DataArray, name: str, level: float | str | None, level_dim: str | None, file: str,
                 what: str):
    """The array at the requested level (or the only one), or its maximum over the levels for `name@max`;
    errors list the levels there are. A vertical dimension without coordinate (WRF's bottom_top) is indexed."""
    dims = [d for d in array.dims if d == level_dim or (level_dim is None and d in LEVEL_NAMES)]
    scalar = [c for c in array.coords if array[c].ndim == 0 and (c == level_dim or c in LEVEL_NAMES)]
    if not dims and level is not None and level_dim is not None and level_dim not in array.coords:
        raise DataError(f"{file}: {what} variable {name!r}: level_dim {level_dim!r} (from the spec) is not one of "
                        f"its dims {array.dims}; set level_dim to its vertical dimension, or leave it out")
    if not dims:
        if level == COLUMN_MAX or (level is not None and not (scalar and np.isclose(float(array[scalar[0]]), level))):
            raise DataError(f"{file}: {what} variable {name!r}: no vertical dimension to take level "
                            f"{level if level == COLUMN_MAX else format(level, 'g')} from (dims {array.dims})")
        return array
    dim = dims[0]
    if level == COLUMN_MAX:
        return array.max(dim, keep_attrs=True)
    levels = np.asarray(array[dim].values, dtype=np.float64) if dim in array.coords else np.arange(array.sizes[dim])
    if level is None:
        if array.sizes[dim] == 1:
            return array.isel({dim: 0})
        raise DataError(f"{file}: {what} variable {name!r} has {array.sizes[dim]} levels "
                        f"({', '.join(f'{v:g}' for v in levels)}); name one, e.g. {name}@{levels[0]:g}")
    match = np.flatnonzero(np.isclose(levels, level))
    if not match.size:
        raise DataError(f"{file}: {what} variable {name!r}: level {level:g} not found; {dim} has "
                        f"{', '.join(f'{v:g}' for v in levels)}")
    return array.isel({dim: int(match[0])})


def generic_field(spec: DatasetSpec, ds: xr.Dataset, name: str, what: str, static: bool = False,
                  in_files: str | None = None, expected: dict[str, str] | None = None) -> Field:
    """Channel `name` of a generic store, read from the variable `in_files` (default: `name`) of `ds`, in the
    units it is `expected` in (see `in_expected_units`)."""
    file = ds.encoding.get("corrdiff_files", "?")
    in_files = in_files or name
    # a variable named as the channel itself (`corrdiff.open_inputs` names them so: t@850) is taken as it is
    base, level = (in_files, None) if in_files in ds.data_vars else parse_variable(in_files)
    if base not in ds.data_vars:
        raise DataError(f"{file}: {what} variable {base!r}{'' if base == name else f' (channel {name!r})'} "
                        f"not found; {_names_hint(ds, name, what)}")
    array = select_level(ds[base], in_files, level, spec.level_dim, file, what)
    source = getattr(spec, what, None) if what in ("inputs", "targets", "static") else None
    array, members = choose_member(array, name, getattr(source, "member", None), file, what)
    lat, lon, y_dim, x_dim = horizontal_coords(ds, array, file, what)
    if static and "time" in array.dims and lat.ndim < 3:
        array = static_at_one_time(array, name, getattr(source, "time", None), file)
    wanted = (y_dim, x_dim) if static and lat.ndim < 3 else ("time", y_dim, x_dim)
    if "time" not in array.dims and not static:
        raise DataError(f"{file}: {what} variable {name!r} has no time dimension (dims {array.dims})")
    extra = [d for d in array.dims if d not in wanted]
    if extra:
        raise DataError(f"{file}: {what} variable {name!r} has extra dims {extra}; expected {wanted} "
                        "(select a level with name@level)")
    array, assumed = in_expected_units(spec, name, array, file, what, expected, in_files)
    mapping = grid_mapping(ds) if lat.ndim >= 2 else None
    field = Field(name, array.transpose(*wanted), file, lat, lon, units_assumed=assumed, mapping=mapping,
                  members=members)
    if lat.ndim == 3:
        return fixed_in_time(field, what, getattr(source, "moving_grid", None), static)
    return field


def static_at_one_time(array: xr.DataArray, name: str, chosen, file: str) -> xr.DataArray:
    """A static field given with a time dimension: the time the spec's `static.time` names, else the field if it
    is the same at every time; a DataError when it changes and no time is named."""
    times = np.asarray(array["time"].values) if "time" in array.coords else None
    if chosen is not None:
        if times is None or not np.issubdtype(times.dtype, np.datetime64):
            raise DataError(f"{file}: static variable {name!r} has no dated time axis to take `time: {chosen}` from")
        match = np.flatnonzero(times.astype("datetime64[ns]") == np.datetime64(pd.Timestamp(chosen), "ns"))
        if not match.size:
            raise DataError(f"{file}: static variable {name!r} has no time {chosen} (it has {times.size} times, "
                            f"{str(times[0])[:16]} … {str(times[-1])[:16]})")
        return array.isel(time=int(match[0]), drop=True)
    if array.sizes["time"] > 1:
        values = np.asarray(array.values)
        changes = np.nanmax(np.abs(values - values[:1])) if np.isfinite(values).any() else 0.0
        if changes > 0:
            raise DataError(f"{file}: static variable {name!r} has {array.sizes['time']} times and changes along them "
                            f"(by up to {changes:.3g}); a static field must be one field: name its time with "
                            "`time: <time>` under `static`, or give a file with one time")
    return array.isel(time=0, drop=True)


def choose_member(array: xr.DataArray, name: str, rule, file: str, what: str) -> tuple[xr.DataArray, tuple | None]:
    """(the array at the ensemble member `rule` asks for (a member's number, "mean", or "all": the first, with the
    labels of all), the labels for "all" else None); a DataError naming the members when the rule does not fit."""
    dims = [d for d in array.dims if d in ENSEMBLE_DIMS]
    if not dims:
        if rule is not None:
            raise DataError(f"{file}: {what} variable {name!r} has no ensemble dimension ({'/'.join(ENSEMBLE_DIMS)}; "
                            f"dims {array.dims}) to take `member: {rule}` from; leave `member` out")
        return array, None
    dim = dims[0]
    labels = np.asarray(array[dim].values) if dim in array.coords else np.arange(array.sizes[dim])
    listed = f"{dim} {', '.join(str(v) for v in labels[:12])}{' …' if labels.size > 12 else ''}"
    if rule is None:
        raise DataError(f"{file}: {what} variable {name!r} has {labels.size} ensemble members ({listed}); choose one "
                        f"with `member: {labels[0]}`, their mean with `member: mean`, or every one with `member: all` "
                        f"under `{what}`")
    if rule == "mean":
        return array.mean(dim, keep_attrs=True), None
    if rule == "all":
        return array.isel({dim: 0}, drop=True), tuple(v.item() if hasattr(v, "item") else v for v in labels)
    match = np.flatnonzero(labels == rule)
    if not match.size:
        raise DataError(f"{file}: {what} variable {name!r}: no member {rule}; it has {listed}")
    return array.isel({dim: int(match[0])}, drop=True), None


def fixed_in_time(field: Field, what: str, rule: str | None, static: bool) -> Field:
    """A field on a grid that moves with time, as its role allows: inputs keep the moving grid (interpolated per
    time); targets and static fields are cut to the window all times share (`rule` "window"), kept at the times
    on one time's grid (`rule` a time), or refused (`corrdiff.data.moving_grids`)."""
    if what == "inputs" and not static:
        return field
    times = np.asarray(field.array["time"].values)
    where = f"{field.file}: {what} {field.name!r}"
    if rule is None:
        raise DataError(f"{where}: the grid moves with time (a moving nest: "
                        f"{moving_grids.drift(field.lat, field.lon, times)}); a fine grid must stay fixed: set "
                        f"`moving_grid: window` under `{what}` to keep the sub-window every time covers, or "
                        f"`moving_grid: <time>` to keep the times on that time's grid")
    if rule == "window":
        window, lat, lon = moving_grids.lattice_window(field.lat, field.lon, field.mapping, where)
        log.info(f"{where}: moving grid: the {window.height}×{window.width} window every time covers")
        if static:  # the first time's values, in the window
            y, x = field.array.dims[1:]
            rows = slice(int(window.y0[0]), int(window.y0[0]) + window.height)
            columns = slice(int(window.x0[0]), int(window.x0[0]) + window.width)
            array = field.array.isel(time=0, drop=True).isel({y: rows, x: columns})
            return dataclasses.replace(field, array=array, lat=lat, lon=lon)
        return dataclasses.replace(field, lat=lat, lon=lon, window=window)
    chosen = np.flatnonzero(times.astype("datetime64[ns]") == np.datetime64(pd.Timestamp(rule), "ns"))
    if not chosen.size:
        raise DataError(f"{where}: `moving_grid: {rule}` is not one of the file's times "
                        f"({str(times[0])[:16]} … {str(times[-1])[:16]})")
    firsts, group = moving_grids.grid_groups(field.lat, field.lon)
    kept = np.flatnonzero(group == group[chosen[0]])
    log.info(f"{where}: moving grid: the {kept.size} of {times.size} times on the grid of {rule}")
    array = field.array.isel(time=kept)
    return dataclasses.replace(field, array=array if not static else array.isel(time=0, drop=True),
                               lat=field.lat[kept[0]], lon=field.lon[kept[0]])


def cwa_field(spec: DatasetSpec, ds: xr.Dataset, name: str, group: str, what: str,
              in_files: str | None = None, expected: dict[str, str] | None = None) -> Field:
    """Channel `name` of a CWA-layout array, picked by `<group>_variable` (and `<group>_pressure` for name@level)
    as `in_files` (default: `name`)."""
    file = ds.encoding.get("corrdiff_files", "?")
    if group not in ds:
        raise DataError(f"{file}: cwa layout: no array {group!r}; the store has {sorted(map(str, ds.data_vars))}")
    array = ds[group]
    channel_dim = array.dims[1]
    names = np.asarray(ds[f"{group}_variable"].values).astype(str)
    pressure_name = f"{group}_pressure"
    pressures = np.asarray(ds[pressure_name].values, dtype=np.float64) if pressure_name in ds else \
        np.full(len(names), np.nan)
    base, level = parse_variable(in_files or name)
    if level == COLUMN_MAX:
        raise DataError(f"{file}: cwa layout: {what} channel {name!r}: `@max` needs a vertical dimension; "
                        f"{group!r} has one channel per level")
    hits = np.flatnonzero(names == base)
    if level is not None:
        hits = [i for i in hits if np.isclose(pressures[i], level)]
    elif len(hits) > 1:
        plain = [i for i in hits if not np.isfinite(pressures[i]) or pressures[i] == 0]
        hits = plain if len(plain) == 1 else hits
    if len(hits) != 1:
        listed = ", ".join(n if not np.isfinite(p) or p == 0 else f"{n}@{p:g}" for n, p in zip(names, pressures))
        problem = "is ambiguous" if len(hits) > 1 else "not found"
        raise DataError(f"{file}: {what} channel {name!r} {problem} in {group!r}; it has {listed}")
    channel = array.isel({channel_dim: int(hits[0])}, drop=True)
    lat, lon, y_dim, x_dim = horizontal_coords(ds, channel, file, what)
    channel = channel.transpose("time", y_dim, x_dim)
    channel.attrs = {k: v for k, v in channel.attrs.items() if k in ("units", "long_name")}
    channel, assumed = in_expected_units(spec, name, channel.rename(name), file, what, expected, in_files)
    return Field(name, channel, file, lat, lon, units_assumed=assumed)


def _names_hint(ds: xr.Dataset, name: str, what: str) -> str:
    names = ds.encoding.get("corrdiff_names") or sorted(map(str, ds.data_vars))
    more = f" … ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else ""
    shown = ", ".join(names[:SHOWN_NAMES]) + more
    return (f"the file has {shown or 'no variables'}; give the name it has there with "
            f"`rename: {{{name}: <name in the file>}}` under `{what}`")


def open_fields(spec: DatasetSpec, source: Source, what: str, static: bool = False,
                opened: list | None = None, expected: dict[str, str] | None = None) -> list[Field]:
    """The fields (channels) a source names, in the spec's order, each in the units it is `expected` in
    (channel: units, overriding the spec's `units`); the opened stores are appended to `opened`. Channels
    whose files give no `units` are assumed to be in the expected ones, with one warning for the source."""
    try:
        fields = _open_fields(spec, source, what, static, [] if opened is None else opened, expected)
    except (OSError, RuntimeError, AttributeError, OverflowError) as err:  # lazily read coordinates and attributes
        if not is_damaged_read(err):
            raise
        files = spec.files(source, what)
        why = "cannot be read" if isinstance(err, OSError) and (err.errno or 0) > 0 else "is damaged"  # netCDF's < 0
        raise DataError(f"{what}: reading {files_label(files)} failed ({type(err).__name__}: "
                        f"{' '.join(str(err).split())}): the file {why}; download or write it again") from None
    assumed = {f.name: f.array.attrs["units"] for f in fields if f.units_assumed}
    origin = TRAINED_UNITS if any((expected or {}).get(n) for n in assumed) else "the spec's `units`"
    units.warn_assumed(fields[0].file if fields else what, what, assumed, origin)
    return fields


def is_damaged_read(err: BaseException) -> bool:
    """Whether `err` is what reading a damaged file raises: an OS error, netCDF4's RuntimeError or AttributeError
    ("NetCDF: HDF error", "NetCDF: Can't open HDF5 attribute"), or a value out of range (OverflowError)."""
    if isinstance(err, CorrdiffError):
        return False
    return isinstance(err, (OSError, OverflowError)) or (isinstance(err, (RuntimeError, AttributeError))
                                                         and str(err).startswith("NetCDF"))


def _open_fields(spec: DatasetSpec, source: Source, what: str, static: bool, opened: list,
                 expected: dict[str, str] | None) -> list[Field]:
    files = spec.files(source, what)
    in_files = {name: source.in_files(name) for name in source.variables}
    if spec.layout == "generic" and single_engine(files, what) == "cfgrib":
        found = grib.open_variables(files, in_files, spec.level_dim, what, source.time_dim)
        for ds, _ in found.values():
            ds.encoding["corrdiff_files"] = files_label(files)
            if not any(ds is store for store in opened):
                opened.append(ds)
        return [generic_field(spec, ds, name, what, static, variable, expected)
                for name, (ds, variable) in found.items()]
    keep = None if spec.layout == "cwa" else {parse_variable(n)[0] for n in in_files.values()}
    ds = open_files(files, what, source.time_dim, keep, source.storage_options)
    opened.append(ds)
    if spec.layout == "cwa" and not static:
        return [cwa_field(spec, ds, name, source.group, what, in_files[name], expected) for name in source.variables]
    return [generic_field(spec, ds, name, what, static, in_files[name], expected) for name in source.variables]


def fine_grid(spec: DatasetSpec, targets: list[Field] | None, static: list[Field] | None):
    """2-D (lat, lon) of the fine grid: from the targets, the static fields or the spec's `grid` file."""
    if spec.grid:
        ds = open_files(spec.files(Source(paths=spec.grid, variables=["grid"]), "grid"), "grid")
        names = set(ds.coords) | set(ds.data_vars)
        file = str(spec.resolve(spec.grid))
        lat, lon = ds[_find(names, LAT_NAMES, "grid latitude", file)], ds[_find(names, LON_NAMES, "grid longitude", file)]
        lat, lon = np.asarray(lat.values, np.float64), np.asarray(lon.values, np.float64)
        if lat.ndim > 2:
            raise DataError(f"{file}: grid: latitude and longitude have {lat.ndim} dimensions (a grid that moves with "
                            "time?); the grid file must hold one fixed grid, 1-D or 2-D")
    elif targets:
        lat, lon = targets[0].lat, targets[0].lon
    elif static:
        lat, lon = static[0].lat, static[0].lon
    else:
        raise DataError(f"{spec.where}: the fine grid is unknown: give `targets`, `static` or `grid` in the spec")
    if lat.ndim == 1:
        lat, lon = np.meshgrid(lat, lon, indexing="ij")
    return lat, lon


def time_axis(field: Field) -> np.ndarray:
    times = np.asarray(field.array["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DataError(f"{field.file}: time of {field.name!r} is not decoded as dates (dtype {times.dtype}); "
                        "it needs CF `units` such as 'hours since 2000-01-01'")
    times = times.astype("datetime64[ns]")
    unique, counts = np.unique(times, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{field.file}: time of {field.name!r} repeats {str(unique[counts > 1][0])[:19]} "
                        f"({int((counts > 1).sum())} repeated times); each time must appear once")
    return times
