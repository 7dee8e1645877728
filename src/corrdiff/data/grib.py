"""GRIB files as they are downloaded (GFS, IFS open data, ERA5 GRIB): many hypercubes in one file.

cfgrib opens one hypercube per dataset, so a file that mixes levels (2 m, 10 m, pressure levels, surface) fails
as a whole. Here the messages of the first file are listed once with eccodes, each requested variable is found
in them, and each (typeOfLevel, level, stepType) group that holds requested variables is opened alone with
cfgrib's `filter_by_keys`. A name is cfgrib's variable name (`t2m`, `u10`) or the GRIB shortName (`2t`, `10u`):

- `name` takes the variable's single-level field (t2m at 2 m; `t` alone is GFS's surface temperature);
- `name@level` takes it at that level, on pressure levels (isobaricInhPa) when several kinds of level have it;
- the spec's `level_dim` restricts the search to one typeOfLevel.

All files of a source are expected to hold the same variables (as a series of forecast files does). No index
files are written beside the data, and cfgrib's warnings about the hypercubes it skips are kept quiet.
"""

import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff.data.canonical import canonical
from corrdiff.data.spec import COLUMN_MAX, parse_variable
from corrdiff.errors import DataError

PRESSURE = "isobaricInhPa"
INSTANT = "instant"


@dataclass(frozen=True)
class Message:
    """What identifies a GRIB field apart from its time: one (variable, typeOfLevel, level, stepType)."""

    var_name: str  # cfgrib's variable name, e.g. t2m
    short_name: str  # the GRIB shortName, e.g. 2t
    type_of_level: str
    level: float
    step_type: str

    def names(self) -> tuple[str, str]:
        return self.var_name, self.short_name


def inventory(path: Path, what: str = "GRIB") -> list[Message]:
    """The distinct fields of a GRIB file, in file order (reads every message's header once)."""
    try:
        import eccodes
    except ImportError as err:
        raise DataError(f"{path}: reading GRIB needs eccodes and cfgrib ({err}); install them with "
                        "pip install 'corrdiff[grib]'") from None
    found: dict[Message, None] = {}
    read = 0  # fields read whole
    with open(path, "rb") as stream:
        # NCEP packs U and V (and others) as several fields in one message: without multi-field support eccodes
        # hands out each message's first field only (307 of a GFS file's 343). On from a clean state for this
        # file, off after: cfgrib, which reads the fields later, expects it off (as its own reader leaves it).
        eccodes.codes_grib_multi_support_on()
        eccodes.codes_grib_multi_support_reset_file(stream)
        try:
            while (handle := eccodes.codes_grib_new_from_file(stream)) is not None:
                try:
                    keys = ("cfVarName", "shortName", "typeOfLevel", "stepType")
                    var_name, short_name, type_of_level, step_type = (eccodes.codes_get(handle, k, str) for k in keys)
                    level = float(eccodes.codes_get(handle, "level", float))
                finally:
                    eccodes.codes_release(handle)
                found.setdefault(Message(var_name, short_name, type_of_level, level, step_type), None)
                read += 1
        except eccodes.CodesInternalError as err:  # eccodes' own errors are no OSError
            raise DataError(f"{path}: {what}: not a readable GRIB file: field {read + 1} is damaged or cut short "
                            f"({err}); download the file again") from None
        finally:
            eccodes.codes_grib_multi_support_off()
    if not found:
        raise DataError(f"{path}: {what}: no GRIB messages in the file")
    return list(found)


COMMON_LEVELS = ("heightAboveGround", PRESSURE, "surface", "meanSea")  # listed first: what inputs usually are


def available(messages: list[Message], names_per_line: int = 24, kinds_shown: int = 6) -> str:
    """The fields as a spec names them, one line per kind of level (at most `names_per_line` names each, then a
    count), the common kinds first and at most `kinds_shown` of them, the others named on a last line:
    `heightAboveGround: t2m (2t), u10 (10u), …`, `isobaricInhPa: t@500/850, …`."""
    kinds: dict[str, dict[tuple[str, str], list[float]]] = {}
    for m in messages:
        kinds.setdefault(m.type_of_level, {}).setdefault((m.var_name, m.short_name), []).append(m.level)
    order = sorted(kinds, key=lambda kind: (COMMON_LEVELS.index(kind) if kind in COMMON_LEVELS
                                            else len(COMMON_LEVELS), -len(kinds[kind])))
    lines = []
    for type_of_level in order[:kinds_shown]:
        variables = kinds[type_of_level]
        shown = []
        for (var_name, short_name), levels in variables.items():
            levels = sorted(set(levels))
            name = var_name if len(levels) == 1 else (f"{var_name}@{'/'.join(f'{v:g}' for v in levels)}"
                                                      if len(levels) <= 4 else f"{var_name}@({len(levels)} levels)")
            shown.append(name + (f" ({short_name})" if short_name != var_name else ""))
        more = f", … {len(shown) - names_per_line} more" if len(shown) > names_per_line else ""
        lines.append(f"  {type_of_level}: {', '.join(shown[:names_per_line])}{more}")
    if len(order) > kinds_shown:
        lines.append(f"  and {len(order) - kinds_shown} other kinds of level: {', '.join(order[kinds_shown:])}")
    return "\n" + "\n".join(lines)


def locate(messages: list[Message], name: str, base: str, level, level_dim: str | None, file: str,
           what: str) -> Message:
    """The one field of `messages` a request (`base`, `level`) means; errors list what the file has."""
    candidates = [m for m in messages if base in m.names()]
    if level_dim is not None:
        candidates = [m for m in candidates if m.type_of_level == level_dim]
    if not candidates:
        where = f" on {level_dim} (level_dim)" if level_dim else ""
        raise DataError(f"{file}: {what} variable {base!r}{where} not found; map a channel to one of the file's "
                        f"fields with `rename` under `{what}`; by kind of level, it has:{available(messages)}")
    if level is None:
        per_kind = {m.type_of_level: {n.level for n in candidates if n.type_of_level == m.type_of_level}
                    for m in candidates}
        chosen = [m for m in candidates if len(per_kind[m.type_of_level]) == 1]
        if not chosen:
            levels = sorted({m.level for m in candidates})
            raise DataError(f"{file}: {what} variable {name!r} has {len(levels)} levels "
                            f"({', '.join(f'{v:g}' for v in levels)}); name one, e.g. {base}@{levels[0]:g}")
    elif level == COLUMN_MAX:
        raise DataError(f"{file}: {what} variable {name!r}: `@max` needs a vertical dimension, which GRIB "
                        "fields (one level per message) do not have")
    else:
        chosen = [m for m in candidates if np.isclose(m.level, level)]
        if not chosen:
            raise DataError(f"{file}: {what} variable {name!r}: level {level:g} not found; name one the file "
                            f"has:{available(candidates)}")
        if len({m.type_of_level for m in chosen}) > 1 and any(m.type_of_level == PRESSURE for m in chosen):
            chosen = [m for m in chosen if m.type_of_level == PRESSURE]
    if len({(m.type_of_level, m.level) for m in chosen}) > 1:
        raise DataError(f"{file}: {what} variable {name!r} is ambiguous; set `level_dim` in the spec to the "
                        f"typeOfLevel to use, one of:{available(chosen)}")
    if len(chosen) > 1:  # the same field as an instant value and e.g. an average: take the instant one
        chosen = [m for m in chosen if m.step_type == INSTANT] or chosen
        if len(chosen) > 1:
            raise DataError(f"{file}: {what} variable {name!r} comes with step types "
                            f"{', '.join(m.step_type for m in chosen)}; keep one in the file")
    return chosen[0]


@contextlib.contextmanager
def quiet_cfgrib():
    """cfgrib logs a traceback for every variable it leaves out of a hypercube; the filters make them noise."""
    logger = logging.getLogger("cfgrib")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def open_group(files: list[Path], message: Message, short_names: list[str], what: str,
               time_dim: str | None) -> xr.Dataset:
    """One (typeOfLevel, level, stepType) group of the files, with the given shortNames, lazily."""
    keys = {"typeOfLevel": message.type_of_level, "level": message.level, "stepType": message.step_type,
            "shortName": short_names}
    kwargs = {"engine": "cfgrib", "decode_timedelta": False,
              "backend_kwargs": {"indexpath": "", "filter_by_keys": keys}}  # "": no .idx files beside the data
    label = f"{files[0]}{' …' if len(files) > 1 else ''}"
    try:
        with quiet_cfgrib():
            if len(files) == 1:
                ds = canonical(xr.open_dataset(files[0], chunks=None, **kwargs), time_dim, str(files[0]))
            else:
                ds = xr.open_mfdataset(files, combine="by_coords", data_vars="minimal", coords="minimal",
                                       compat="override", join="outer", preprocess=partial(_canonical, time_dim),
                                       **kwargs)
    except (OSError, ValueError, KeyError, EOFError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{what}: cannot open {label} ({message.type_of_level} {message.level:g}): {err}") from None
    return ds


def _canonical(time_dim: str | None, ds: xr.Dataset) -> xr.Dataset:
    return canonical(ds, time_dim, str(ds.encoding.get("source", "?")))


def open_variables(files: list[Path], requests: dict[str, str], level_dim: str | None, what: str,
                   time_dim: str | None = None) -> dict[str, tuple[xr.Dataset, str]]:
    """For each channel of `requests` (channel: `name` or `name@level` in the files), the opened group holding
    it and the variable's name there; each group is opened once, whatever the number of its variables."""
    file = str(files[0])
    messages = inventory(files[0], what)
    located = {channel: locate(messages, name, *parse_variable(name), level_dim, file, what)
               for channel, name in requests.items()}
    groups: dict[tuple, list[Message]] = {}
    for message in located.values():
        groups.setdefault((message.type_of_level, message.level, message.step_type), []).append(message)
    opened = {key: open_group(files, group[0], sorted({m.short_name for m in group}), what, time_dim)
              for key, group in groups.items()}
    result = {}
    for channel, message in located.items():
        ds = opened[(message.type_of_level, message.level, message.step_type)]
        names = [v for v in ds.data_vars if ds[v].attrs.get("GRIB_shortName") == message.short_name] or \
            [v for v in ds.data_vars if v == message.var_name]
        if not names:
            raise DataError(f"{file}: {what} variable {message.var_name!r} ({message.type_of_level} "
                            f"{message.level:g}) could not be read by cfgrib; the group has {list(ds.data_vars)}")
        result[channel] = (ds, names[0])
    return result
