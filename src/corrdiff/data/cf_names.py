"""CF names of the channels corrdiff knows: the one table from a channel name (ERA5, GFS, WRF, CMIP, CorrDiff
Taiwan spellings) to its CF `standard_name` and a `long_name`, and the attributes an output variable gets from it.

A name may stand for quantities of different units (`tp`: an amount in kg m-2 or m, or a rate; `z`: geopotential
in m2 s-2 or its height in m): the variable's own `units` pick the first candidate they can be converted to
(`corrdiff.data.units`). Every standard_name here is in the CF standard-name table (tests/data/test_cf_names.py
checks it against the copy compliance-checker ships). Names are matched ignoring case; `t@850` is looked up as
`t`, `refl@max` as `refl`.
"""

from dataclasses import dataclass

from corrdiff.data import units
from corrdiff.data.spec import COLUMN_MAX, parse_variable


@dataclass(frozen=True)
class CFName:
    """A CF standard_name, its canonical units and the long_name a channel of it gets."""

    standard_name: str
    canonical_units: str
    long_name: str


def _quantity(standard_name: str, canonical_units: str, long_name: str | None = None) -> tuple[CFName, ...]:
    return (CFName(standard_name, canonical_units, long_name or standard_name.replace("_", " ")),)


T2M = _quantity("air_temperature", "K", "2 m air temperature")
U10 = _quantity("eastward_wind", "m s-1", "10 m eastward wind")
V10 = _quantity("northward_wind", "m s-1", "10 m northward wind")
REFLECTIVITY = _quantity("equivalent_reflectivity_factor", "dBZ", "radar reflectivity")
PRECIPITATION = (CFName("precipitation_amount", "kg m-2", "precipitation amount"),
                 CFName("precipitation_flux", "kg m-2 s-1", "precipitation flux"),
                 CFName("lwe_thickness_of_precipitation_amount", "m", "precipitation (liquid water equivalent depth)"),
                 CFName("lwe_precipitation_rate", "m s-1", "precipitation rate (liquid water equivalent)"))
GEOPOTENTIAL = (CFName("geopotential", "m2 s-2", "geopotential"),
                CFName("geopotential_height", "m", "geopotential height"))
VERTICAL_VELOCITY = (CFName("upward_air_velocity", "m s-1", "vertical velocity"),
                     CFName("lagrangian_tendency_of_air_pressure", "Pa s-1", "vertical velocity (pressure)"))
MSL = _quantity("air_pressure_at_mean_sea_level", "Pa", "mean sea level pressure")
SURFACE_PRESSURE = _quantity("surface_air_pressure", "Pa", "surface pressure")

# lower-case channel name -> candidates, the default (units unknown) first
KNOWN: dict[str, tuple[CFName, ...]] = {
    **dict.fromkeys(("t2m", "t2", "2t", "tas", "tmp2m", "temperature_2m"), T2M),
    **dict.fromkeys(("t", "ta", "tmp", "temperature", "air_temperature"), _quantity("air_temperature", "K")),
    **dict.fromkeys(("d2m", "2d", "td2", "dpt2m"), _quantity("dew_point_temperature", "K", "2 m dew point temperature")),
    **dict.fromkeys(("skt", "tsk", "ts"), _quantity("surface_temperature", "K", "skin temperature")),
    "sst": _quantity("sea_surface_temperature", "K"),
    **dict.fromkeys(("u10", "u10m", "10u", "uas", "ugrd10m", "eastward_wind_10m"), U10),
    **dict.fromkeys(("v10", "v10m", "10v", "vas", "vgrd10m", "northward_wind_10m"), V10),
    **dict.fromkeys(("u100", "100u"), _quantity("eastward_wind", "m s-1", "100 m eastward wind")),
    **dict.fromkeys(("v100", "100v"), _quantity("northward_wind", "m s-1", "100 m northward wind")),
    **dict.fromkeys(("u", "ua", "ugrd", "eastward_wind"), _quantity("eastward_wind", "m s-1")),
    **dict.fromkeys(("v", "va", "vgrd", "northward_wind"), _quantity("northward_wind", "m s-1")),
    **dict.fromkeys(("w", "wa"), VERTICAL_VELOCITY),
    **dict.fromkeys(("si10", "ws10", "wspd10", "sfcwind"), _quantity("wind_speed", "m s-1", "10 m wind speed")),
    **dict.fromkeys(("fg10", "i10fg", "gust", "wind_speed_of_gust"), _quantity("wind_speed_of_gust", "m s-1",
                                                                                 "10 m wind gust")),
    **dict.fromkeys(("msl", "mslp", "psl", "slp", "prmsl", "pmsl", "air_pressure_at_mean_sea_level"), MSL),
    **dict.fromkeys(("sp", "ps", "psfc", "surface_air_pressure"), SURFACE_PRESSURE),
    **dict.fromkeys(("p", "pres", "pressure", "air_pressure"), _quantity("air_pressure", "Pa", "pressure")),
    **dict.fromkeys(("tp", "pr", "apcp", "precip", "precipitation"), PRECIPITATION),
    **dict.fromkeys(("refl", "refl_10cm", "reflectivity", "dbz", "mdbz", "mrr", "maximum_radar_reflectivity",
                     "equivalent_reflectivity_factor"), REFLECTIVITY),
    # WRF's Q2 and QVAPOR are mixing ratios (kg of vapour per kg of dry air), not specific humidities.
    "q2": _quantity("humidity_mixing_ratio", "1", "2 m water vapour mixing ratio"),
    **dict.fromkeys(("qvapor", "humidity_mixing_ratio"), _quantity("humidity_mixing_ratio", "1",
                                                                  "water vapour mixing ratio")),
    **dict.fromkeys(("q", "hus", "spfh", "specific_humidity"), _quantity("specific_humidity", "1")),
    **dict.fromkeys(("huss", "2sh", "spfh2m"), _quantity("specific_humidity", "1", "2 m specific humidity")),
    **dict.fromkeys(("r", "rh", "hur", "relative_humidity"), _quantity("relative_humidity", "1")),
    **dict.fromkeys(("r2", "2r", "rh2", "rh2m", "hurs"), _quantity("relative_humidity", "1", "2 m relative humidity")),
    **dict.fromkeys(("tcwv", "pwat", "prw"), _quantity("atmosphere_mass_content_of_water_vapor", "kg m-2",
                                                      "total column water vapour")),
    **dict.fromkeys(("tcc", "clt"), _quantity("cloud_area_fraction", "1", "total cloud cover")),
    **dict.fromkeys(("z", "phi", "geopotential"), GEOPOTENTIAL),
    **dict.fromkeys(("gh", "zg", "geopotential_height"), GEOPOTENTIAL[::-1]),
}


def cf_name(channel: str, channel_units: str | None = None) -> CFName | None:
    """The CF name of `channel` in `channel_units`: the first candidate whose canonical units these convert to
    (the first of all when no units are given); None for a name not in KNOWN or units none of its candidates has."""
    candidates = KNOWN.get(str(channel).partition("@")[0].lower(), ())
    if channel_units is None or not str(channel_units).strip():
        return candidates[0] if candidates else None
    return next((c for c in candidates if units.conversion(str(channel_units), c.canonical_units) is not None), None)


def with_cf_names(channel: str, attrs: dict) -> dict:
    """`attrs` of an output variable of `channel` with a `long_name` and, when one is known, a `standard_name`.

    The file's own attributes win; the table fills in what they lack; an unknown channel is named by itself.
    """
    attrs = dict(attrs)
    known = cf_name(channel, attrs.get("units"))
    if known is not None and not attrs.get("standard_name"):
        attrs["standard_name"] = known.standard_name
    if not attrs.get("long_name"):
        attrs["long_name"] = _long_name(channel, known)
    return attrs


def _long_name(channel: str, known: CFName | None) -> str:
    try:
        level = parse_variable(str(channel))[1]
    except ValueError:  # not a spec's `name@level` (a name from elsewhere): named by itself
        known = None
    if known is None:
        return str(channel)
    if level == COLUMN_MAX:
        return f"column maximum of {known.long_name}"
    return known.long_name if level is None else f"{known.long_name} at level {level:g}"
