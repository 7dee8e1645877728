"""Units of the fields read: CF unit strings understood with pint and cf-xarray's UDUNITS-like registry, and
the linear conversion from a file's units to the units a channel is expected in.

A channel is expected in some units when the spec's `units` names them or, at generation, when the checkpoint
records the units each input was trained in. A field whose CF `units` differ is converted as it is read when
the two are compatible (°C↔K, hPa↔Pa, km h-1↔m s-1, …), and a geopotential in m2 s-2 and a geopotential
height in m (or gpm) are converted through standard gravity g = 9.80665 m s-2; incompatible units are a
DataError naming the file, the variable, its units and the expected ones. Every conversion here is
`expected = scale * found + offset`.
"""

import logging
from dataclasses import dataclass
from functools import lru_cache

import pint
import xarray as xr

from corrdiff.errors import DataError

log = logging.getLogger(__name__)
STANDARD_GRAVITY = 9.80665  # m s-2, WMO's g for geopotential height
# Channels that may be converted between geopotential (m2 s-2) and geopotential height (m, gpm): by name
# (ERA5 z, GFS gh, CMIP zg, WRF/NCEP hgt) or by their CF standard_name.
GEOPOTENTIAL_NAMES = frozenset({"z", "gh", "zg", "hgt", "geopotential", "geopotential_height", "phi"})


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    """cf-xarray's pint registry (CF/UDUNITS spellings such as `m s-1`, `degC`, `gpm`); imported once, lazily."""
    # cf-xarray redefines a few of pint's units (%, C, degrees_north, …) and pint logs a warning for each.
    pint_log = logging.getLogger("pint.util")
    level = pint_log.level
    pint_log.setLevel(logging.ERROR)
    try:
        from cf_xarray.units import units
    finally:
        pint_log.setLevel(level)
    return units


@lru_cache(maxsize=256)
def parse(text: str) -> pint.Unit | None:
    """The pint unit of a CF `units` string; None when the registry does not know it (e.g. `dBZ`)."""
    try:
        return registry().parse_units(str(text).strip())
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, AssertionError):
        return None


def same_spelling(found: str, expected: str) -> bool:
    return str(found).strip().lower() == str(expected).strip().lower()


def is_geopotential(*names: str, standard_name: str | None = None) -> bool:
    """Whether a channel holds a geopotential or a geopotential height (by its names or CF standard_name)."""
    if standard_name and "geopotential" in str(standard_name).lower():
        return True
    return any(str(n).partition("@")[0].lower() in GEOPOTENTIAL_NAMES for n in names if n)


@dataclass(frozen=True)
class Conversion:
    """`expected = scale * found + offset`, from units `found` to units `expected`."""

    found: str
    expected: str
    scale: float
    offset: float

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def apply(self, array: xr.DataArray) -> xr.DataArray:
        """`array` in the expected units, lazily (dask, one chunk per time), computed in float64, with attrs kept."""
        if self.identity:
            return array.assign_attrs(units=self.expected)
        # In the store's own chunks in space (Zarr's), so that a crop of the result (corrdiff.data.crop) still
        # reads only the chunks it needs.
        stored = {dim: size for dim, size in array.encoding.get("preferred_chunks", {}).items() if dim in array.dims}
        lazy = array.chunk({**stored, "time": 1}) if "time" in array.dims else array.chunk(stored)
        converted = lazy.astype("float64") * self.scale + self.offset
        return converted.assign_attrs({**array.attrs, "units": self.expected})


def conversion(found: str, expected: str, geopotential: bool = False) -> Conversion | None:
    """The conversion from units `found` to `expected`; None when they are incompatible or not understood.

    Units spelt alike (ignoring case) need no conversion even where pint does not know them (`dBZ`).
    With `geopotential`, m2 s-2 and m are also compatible, through g.
    """
    if same_spelling(found, expected):
        return Conversion(found, expected, 1.0, 0.0)
    source, target = parse(found), parse(expected)
    if source is None or target is None:
        return None
    units = registry()
    quantity = lambda value, unit: units.Quantity(value, unit)
    candidates = [lambda v: quantity(v, source)]
    if geopotential:
        gravity = quantity(STANDARD_GRAVITY, "m s-2")
        candidates += [lambda v: quantity(v, source) / gravity, lambda v: quantity(v, source) * gravity]
    for make in candidates:
        try:
            # Two points give the affine map; pint handles the offset units (degC) itself.
            zero, one = (float(make(v).to(target).magnitude) for v in (0.0, 1.0))
        except pint.errors.DimensionalityError:
            continue
        scale = one - zero
        # pint's factors are decimal strings: round-off of 1e-16 must not make a spelling change a conversion
        return Conversion(found, expected, 1.0 if abs(scale - 1) < 1e-12 else scale, 0.0 if abs(zero) < 1e-12 else zero)
    return None


def to_expected(array: xr.DataArray, expected: str | None, *, name: str, file: str, what: str,
                origin: str = "the spec's `units`", in_files: str | None = None) -> tuple[xr.DataArray, bool]:
    """`array` in the `expected` units, and whether its units were assumed (the file gave none).

    No expectation (None or ""): unchanged. No `units` attribute: the expected units are assumed and the array
    marked with them (the caller warns). Incompatible units: a DataError naming `file`, the variable, its units,
    the expected ones and where the expectation comes from (`origin`).
    """
    if not expected:
        return array, False
    found = array.attrs.get("units")
    if found is None or not str(found).strip():
        return array.assign_attrs(units=expected), True
    geopotential = is_geopotential(name, in_files, array.name, standard_name=array.attrs.get("standard_name"))
    change = conversion(str(found), expected, geopotential)
    if change is None:
        unknown = [u for u in (str(found), expected) if parse(u) is None]
        why = f" ({' and '.join(repr(u) for u in unknown)} not understood as CF units)" if unknown else ""
        shown = name if not in_files or in_files == name else f"{name} (as {in_files!r} in the file)"
        raise DataError(f"{file}: {what} variable {shown!r} has units {str(found)!r}, which cannot be converted to "
                        f"{expected!r} ({origin}){why}; give the data in {expected!r} or correct its `units` attribute")
    if not change.identity:
        log.debug(f"{file}: {what} {name!r} converted from {found} to {expected}")
    return change.apply(array), False


def warn_assumed(file: str, what: str, assumed: dict[str, str], origin: str) -> None:
    """One warning line for the channels of a source whose files give no `units`, with the units assumed."""
    if assumed:
        listed = ", ".join(f"{name} ({units})" for name, units in assumed.items())
        log.warning(f"{file}: {what} without a `units` attribute: {listed}; assumed to be in {origin}")
