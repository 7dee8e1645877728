"""`corrdiff.open_inputs`: coarse input files opened as the CLI opens a spec's inputs, for the Python API.

The same reader as a dataset spec's `inputs` (`corrdiff.data.readers`): NetCDF, Zarr and GRIB (every field of a
multi-field GRIB2 message, one level group at a time), `rename`, levels (`t@850`, `refl@max`), the time axis
(ERA5's `valid_time`, WRF's `Times`, GRIB forecasts' valid times), ensemble members and units. Errors speak of the
function's arguments (`rename={...}`), not of spec keys (`as_arguments`).
"""

import glob
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff.data.readers import open_fields
from corrdiff.data.spec import DatasetSpec, Source
from corrdiff.errors import ConfigError, DataError
from corrdiff.file_integrity import is_url

OPENED = "corrdiff_channels"  # attribute of a dataset open_inputs made: its variables are channels already

# Spec phrasing → argument phrasing, for errors raised while the API reads inputs.
_ARGUMENTS = [
    (re.compile(r"`rename: \{(.+?): <name in the file>\}` under `\w+`"), r"rename={'\1': '<name in the file>'}"),
    (re.compile(r"`member: (\w+)`(?: under `\w+`)?"), r"member=\1"),
    (re.compile(r"`moving_grid: (\S+?)`(?: under `\w+`)?"), r"a fixed grid (the spec's moving_grid: \1)"),
    (re.compile(r"set `edge: nearest` in the spec"), "pass edge='nearest'"),
    (re.compile(r"`nan_policy: (\w+)`"), r"nan_policy='\1'"),
    (re.compile(r" in the spec\b"), ""),
    (re.compile(r"time_dim (\S+) \(from the spec\)"), r"time_dim=\1"),
    (re.compile(r"level_dim (\S+) \(from the spec\)"), r"level_dim=\1"),
]


def as_arguments(message: str) -> str:
    """An input error's text with spec keys (`rename: {...}` under `inputs`) said as API arguments."""
    for pattern, replacement in _ARGUMENTS:
        message = pattern.sub(replacement, message)
    return message


@contextmanager
def argument_errors():
    """Re-raise a DataError with its spec keys said as arguments (`as_arguments`)."""
    try:
        yield
    except DataError as err:
        raise DataError(as_arguments(str(err))) from None


def existing_inputs(items, missing) -> list[Path | str]:
    """Input files or globs as absolute Paths, URLs (stores read through fsspec, `corrdiff.data.remote`) as they are;
    `missing(item, path, is_glob)` gives the error raised for a file or glob that matches nothing."""
    paths = [item if is_url(item) else Path(item).expanduser().absolute() for item in items]
    for item, path in zip(items, paths):
        if is_url(path):
            continue
        pattern = any(ch in str(path) for ch in "*?[")
        if not (glob.glob(str(path)) if pattern else path.exists()):
            raise missing(item, path, pattern)
    return paths


def input_paths(path_or_paths) -> list[Path | str]:
    """A path, a glob or a list of them (`existing_inputs`); a DataError naming one that matches nothing."""
    given = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not given:
        raise ConfigError("no input files given: pass a path, a glob or a list of them")
    return existing_inputs(given, lambda item, _, __: DataError(f"inputs {item}: no such file (or no file matches "
                                                                   "the glob)"))


def open_inputs(path_or_paths, variables, *, rename: dict | None = None, member=None, time_dim: str | None = None,
                level_dim: str | None = None, units: dict | None = None) -> xr.Dataset:
    """The channels `variables` (`name`, `name@level`, `name@max`) of coarse input files, lazily, as a Dataset of
    (time, y, x) variables named by channel, with their lat/lon and units: what a spec's `inputs` would read.

    `rename`: {channel: its name in the files} (a base name renames every level, e.g. {"t": "TMP"}).
    `member`: for ensemble inputs, a member's number or "mean" ("all" is for `Downscaler.downscale`).
    `units`: {channel: CF units} to convert to. Passing the result to `Downscaler.downscale` reads the channels
    as they are (no renaming again).
    """
    if isinstance(variables, str):
        variables = [variables]
    if member == "all":
        raise ConfigError("member='all' is for Downscaler.downscale (K members per input member); open_inputs "
                          "gives one member (member=0) or the mean (member='mean')")
    paths = [str(p) for p in input_paths(path_or_paths)]
    try:
        source = Source(paths=paths, variables=list(variables), rename=dict(rename or {}),
                        time_dim=time_dim, member=member)
        spec = DatasetSpec(inputs=source, level_dim=level_dim, units=dict(units or {}))
    except ValueError as err:  # pydantic's ValidationError
        raise ConfigError(f"open_inputs: {' '.join(str(err).split())}") from None
    with argument_errors():
        fields = open_fields(spec, source, "inputs")
    return fields_as_dataset(fields)


def fields_as_dataset(fields) -> xr.Dataset:
    """Input `Field`s as one Dataset: variables named by channel, (time, y, x), lat/lon coordinates."""
    first = fields[0]
    lat, lon = first.lat, first.lon
    grid = ("lat", "lon") if lat.ndim == 1 else ("y", "x")
    on = {1: None, 2: grid, 3: ("time", *grid)}[lat.ndim]  # a grid that moves with time keeps its time axis
    coords = {"lat": (("lat",), lat), "lon": (("lon",), lon)} if lat.ndim == 1 else {"lat": (on, lat), "lon": (on, lon)}
    data = {}
    for field in fields:
        if field.lat.shape != lat.shape or not np.allclose(field.lat, lat) or not np.allclose(field.lon, lon):
            raise DataError(f"{field.file}: {field.name!r} is on another grid than {first.name!r}; open them apart")
        array = field.array.rename({d: g for d, g in zip(field.array.dims[-2:], grid)})
        array = array.drop_vars([c for c in array.coords if c in ("lat", "lon") or not set(array[c].dims) <= {"time"}])
        data[field.name] = array.assign_attrs(field.attrs)
    return xr.Dataset(data, coords={**coords, "time": first.array["time"]}, attrs={OPENED: ", ".join(data)})
