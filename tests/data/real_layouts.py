"""Small files laid out as the real sources write them, and the example specs of docs/data-format.md.

- `write_wrfout`: raw WRF output (netCDF4, as WRF writes it): dims Time × south_north × west_east (and
  bottom_top), `Times` as a character array, `XTIME` in minutes since the start, `XLAT`/`XLONG` per time,
  variables with `coordinates = "XLONG XLAT XTIME"`; one or several times per file, named by their first time.
- `write_era5_cds`: ERA5 NetCDF as the CDS delivers it since 2024: `valid_time`, `number`, `expver`,
  `pressure_level`, latitudes north to south, single levels and pressure levels in two files.
- `write_gfs`: GFS GRIB2 as downloaded: every kind of level in one file (2 m, 10 m, isobaric, surface, mean sea
  level, entire atmosphere), global 0..360 grid, one file per cycle and step, or one file with two cycles.
- `write_latlon_targets`: targets on a regular lat/lon grid (1-D `lat`/`lon` dimension coordinates).

Every field is linear in latitude, (signed) longitude and time, so bilinear interpolation reproduces the inputs
exactly at the fine points: `expected(name, lat, lon, times)` is the value a reader must give.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-format.md"
WRF_TIMES = pd.date_range("2021-01-01T00", periods=8, freq="3h")  # the targets' times
ERA5_TIMES = pd.date_range("2021-01-01T00", periods=24, freq="1h")  # the inputs cover more
GFS_CYCLES, GFS_STEPS = (0, 12), (0, 3, 6, 9)  # valid times 00..21 every 3 h
PRESSURE_LEVELS = (1000.0, 850.0, 500.0)
# (offset, a, b): value = offset + a·lat + b·lon + hours since 2021-01-01 / 3, per field.
COEFFS = {"t2m": (270.0, 0.5, 0.25), "u10": (-20.0, 0.3, 0.1), "v10": (10.0, -0.2, 0.3),
          "t@850": (250.0, 0.4, 0.2), "t@500": (220.0, 0.3, 0.1), "t@1000": (275.0, 0.5, 0.2),
          "z@500": (50000.0, 30.0, 10.0), "z@850": (14000.0, 20.0, 5.0), "z@1000": (1000.0, 10.0, 2.0)}


def doc_spec(name: str) -> str:
    """The YAML block under `<!-- spec: name -->` in docs/data-format.md."""
    match = re.search(rf"<!-- spec: {re.escape(name)} -->\s*```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no spec {name!r} in {DOC}"
    return match.group(1)


def write_doc_spec(folder: Path, name: str, file: str = "spec.yaml") -> Path:
    path = Path(folder) / file
    path.write_text(doc_spec(name))
    return path


def signed(lon):
    return (np.asarray(lon) + 180.0) % 360.0 - 180.0


def expected(name: str, lat, lon, times) -> np.ndarray:
    """(time, *lat.shape) values of a field, linear in lat, signed lon and time."""
    offset, a, b = COEFFS[name]
    hours = ((pd.DatetimeIndex(times) - pd.Timestamp("2021-01-01")) / pd.Timedelta("1h")).to_numpy()
    return offset + a * np.asarray(lat)[None] + b * signed(lon)[None] + hours.reshape(-1, *[1] * np.ndim(lat)) / 3


# --- WRF -------------------------------------------------------------------------------------------------
def wrf_grid(shape=(16, 24)):
    """A slightly rotated grid over 44–47° N, 2° W–4° E (across the prime meridian), like a Lambert WRF grid."""
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return 44.0 + 0.2 * j + 0.01 * i, -2.0 + 0.25 * i - 0.01 * j


def wrf_reflectivity(times, shape=(16, 24), levels=5) -> np.ndarray:
    """(time, bottom_top, y, x) reflectivity in dBZ, −30 where there is no echo."""
    rng = np.random.default_rng(7)
    echo = rng.gamma(0.6, 12.0, (len(times), levels, *shape))
    return np.where(echo > 5, echo, -30.0).astype(np.float32)


def write_wrfout(folder: Path, times=WRF_TIMES, per_file: int = 1, xtime_units: bool = True,
                 shape=(16, 24)) -> list[Path]:
    """wrfout_d01_<first time> files of `per_file` times each, as WRF writes them; returns the paths."""
    import netCDF4

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lat, lon = wrf_grid(shape)
    refl = wrf_reflectivity(times, shape)
    start = pd.Timestamp(times[0])
    paths = []
    for first in range(0, len(times), per_file):
        part = pd.DatetimeIndex(times[first:first + per_file])
        path = folder / f"wrfout_d01_{part[0]:%Y-%m-%d_%H:%M:%S}"
        with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
            nc.TITLE = " OUTPUT FROM WRF V4.5 MODEL"
            nc.START_DATE = f"{start:%Y-%m-%d_%H:%M:%S}"
            nc.MAP_PROJ, nc.DX, nc.DY = 1, 2000.0, 2000.0
            for dim, size in (("Time", None), ("DateStrLen", 19), ("south_north", shape[0]),
                              ("west_east", shape[1]), ("bottom_top", refl.shape[1])):
                nc.createDimension(dim, size)
            chars = nc.createVariable("Times", "S1", ("Time", "DateStrLen"))
            chars[:] = netCDF4.stringtochar(np.array([f"{t:%Y-%m-%d_%H:%M:%S}" for t in part], "S19"))
            xtime = nc.createVariable("XTIME", "f4", ("Time",))
            xtime.description = f"minutes since {start:%Y-%m-%d %H:%M:%S}"
            xtime.units = f"minutes since {start:%Y-%m-%d %H:%M:%S}" if xtime_units else "minutes"
            xtime[:] = ((part - start) / pd.Timedelta("1min")).to_numpy()
            grid = ("Time", "south_north", "west_east")
            for name, values, units in (("XLAT", lat, "degree_north"), ("XLONG", lon, "degree_east")):
                var = nc.createVariable(name, "f4", grid)
                var.units, var.stagger, var.MemoryOrder = units, "", "XY "
                var[:] = np.broadcast_to(values, (len(part), *shape))
            fields = {"T2": ("t2m", "K"), "U10": ("u10", "m s-1"), "V10": ("v10", "m s-1")}
            for name, (key, units) in fields.items():
                var = nc.createVariable(name, "f4", grid)
                var.units, var.coordinates, var.MemoryOrder = units, "XLONG XLAT XTIME", "XY "
                var[:] = expected(key, lat, lon, part) + 0.01 * np.sin(lat * 7)[None]  # fine-scale detail
            var = nc.createVariable("REFL_10CM", "f4", ("Time", "bottom_top", "south_north", "west_east"))
            var.units, var.coordinates, var.MemoryOrder = "dBZ", "XLONG XLAT XTIME", "XYZ"
            var.description = "Radar reflectivity (lamda = 10 cm)"
            var[:] = refl[first:first + per_file]
            var = nc.createVariable("PSFC", "f4", grid)  # one of the many variables nobody asked for
            var.units, var.coordinates = "Pa", "XLONG XLAT XTIME"
            var[:] = 101325.0
        paths.append(path)
    return paths


# --- ERA5 from the CDS ---------------------------------------------------------------------------------
def era5_grid():
    """0.5° over 50..42° N (north to south, as ERA5 comes) and 4° W..6° E (−180..180, as the CDS cuts areas)."""
    return np.arange(50.0, 41.9, -0.5), np.arange(-4.0, 6.01, 0.5)


def write_era5_cds(folder: Path, times=ERA5_TIMES) -> list[Path]:
    """Single levels and pressure levels, as two NetCDF files in the CDS layout; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lat, lon = era5_grid()
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    coords = {"number": 0, "valid_time": ("valid_time", times),
              "latitude": ("latitude", lat, {"units": "degrees_north"}),
              "longitude": ("longitude", lon, {"units": "degrees_east"}),
              "expver": ("valid_time", np.full(len(times), "0001"))}
    grib_attrs = {"GRIB_centre": "ecmf", "Conventions": "CF-1.7", "institution": "European Centre for Medium-Range "
                  "Weather Forecasts"}
    dims = ("valid_time", "latitude", "longitude")
    single = xr.Dataset({name: (dims, expected(name, grid_lat, grid_lon, times).astype(np.float32),
                                {"units": units, "GRIB_shortName": short})
                         for name, units, short in (("t2m", "K", "2t"), ("u10", "m s**-1", "10u"),
                                                    ("v10", "m s**-1", "10v"))},
                        coords=coords, attrs=grib_attrs)
    levels = (850.0, 500.0)
    pressure = xr.Dataset(
        {name: (("valid_time", "pressure_level", "latitude", "longitude"),
                np.stack([expected(f"{name}@{p:g}", grid_lat, grid_lon, times) for p in levels], 1).astype(np.float32),
                {"units": units})
         for name, units in (("t", "K"), ("z", "m**2 s**-2"))},
        coords={**coords, "pressure_level": ("pressure_level", list(levels), {"units": "hPa"})}, attrs=grib_attrs)
    encoding = {"valid_time": {"units": "seconds since 1970-01-01", "dtype": "int64"}}
    paths = [folder / "data_stream-oper_stepType-instant.nc", folder / "pressure_levels.nc"]
    single.to_netcdf(paths[0], encoding=encoding)
    pressure.to_netcdf(paths[1], encoding=encoding)
    return paths


# --- targets on a regular lat/lon grid ------------------------------------------------------------------
def latlon_grid(shape=(16, 24)):
    return 44.0 + 0.25 * np.arange(shape[0]), -2.0 + 0.25 * np.arange(shape[1])


def write_latlon_targets(path: Path, times=WRF_TIMES, lat=None, lon=None) -> Path:
    """t2m, u10, v10 on (time, lat, lon) with 1-D `lat`/`lon` dimension coordinates."""
    default_lat, default_lon = latlon_grid()
    lat = default_lat if lat is None else lat
    lon = default_lon if lon is None else lon
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    rng = np.random.default_rng(3)
    noise = lambda: rng.normal(0, 0.3, (len(times), *grid_lat.shape))  # noqa: E731
    ds = xr.Dataset({name: (("time", "lat", "lon"),
                            (expected(name, grid_lat, grid_lon, times) + noise()).astype(np.float32), {"units": units})
                     for name, units in (("t2m", "K"), ("u10", "m s-1"), ("v10", "m s-1"))},
                    coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                            "lon": ("lon", lon, {"units": "degrees_east"})})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


# --- GFS GRIB2 ------------------------------------------------------------------------------------------
GFS_FIELDS = [  # (shortName, typeOfLevel, level, key of COEFFS or a constant)
    ("10u", "heightAboveGround", 10, "u10"), ("10v", "heightAboveGround", 10, "v10"),
    ("2t", "heightAboveGround", 2, "t2m"), ("t", "surface", 0, 285.0), ("prmsl", "meanSea", 0, 101300.0),
    ("refc", "atmosphere", 0, 5.0),
] + [(short, "isobaricInhPa", int(p), f"{short.replace('gh', 'z')}@{p:g}")
     for p in PRESSURE_LEVELS for short in ("t", "gh")]


def gfs_grid():
    """The GFS global grid at 2.5° (GFS downloads are 0.25°): latitudes 90..−90, longitudes 0..357.5."""
    return np.arange(90.0, -90.1, -2.5), np.arange(0.0, 360.0, 2.5)


def _gfs_message(out, short: str, type_of_level: str, level: int, cycle: pd.Timestamp, step: int, values) -> None:
    import eccodes

    lat, lon = gfs_grid()
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        keys = {"centre": "kwbc", "gridType": "regular_ll", "Ni": lon.size, "Nj": lat.size,
                "latitudeOfFirstGridPointInDegrees": lat[0], "latitudeOfLastGridPointInDegrees": lat[-1],
                "longitudeOfFirstGridPointInDegrees": lon[0], "longitudeOfLastGridPointInDegrees": lon[-1],
                "iDirectionIncrementInDegrees": 2.5, "jDirectionIncrementInDegrees": 2.5, "jScansPositively": 0,
                "dataDate": int(f"{cycle:%Y%m%d}"), "dataTime": int(f"{cycle:%H%M}"), "stepUnits": 1,
                "forecastTime": step, "typeOfLevel": type_of_level, "level": level, "shortName": short,
                "bitsPerValue": 24}
        for key, value in keys.items():
            eccodes.codes_set(handle, key, float(value) if isinstance(value, np.floating) else value)
        eccodes.codes_set_values(handle, np.asarray(values, np.float64).ravel())
        eccodes.codes_write(handle, out)
    finally:
        eccodes.codes_release(handle)


def _gfs_forecast(out, cycle: pd.Timestamp, step: int) -> None:
    lat, lon = gfs_grid()
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    valid = [cycle + pd.Timedelta(hours=step)]
    for short, type_of_level, level, what in GFS_FIELDS:
        constant = not isinstance(what, str)
        values = np.full(grid_lat.shape, what) if constant else expected(what, grid_lat, grid_lon, valid)[0]
        _gfs_message(out, short, type_of_level, level, cycle, step, values)


def write_gfs(folder: Path, cycles=GFS_CYCLES, steps=GFS_STEPS, one_file: str | None = None) -> list[Path]:
    """gfs.t<HH>z.pgrb2.2p50.f<SSS> files (one cycle and step each), or all in the file `one_file`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = [(pd.Timestamp("2021-01-01") + pd.Timedelta(hours=c), s) for c in cycles for s in steps]
    if one_file:
        with open(folder / one_file, "wb") as out:
            for cycle, step in runs:
                _gfs_forecast(out, cycle, step)
        return [folder / one_file]
    paths = []
    for cycle, step in runs:
        paths.append(folder / f"gfs.t{cycle:%H}z.pgrb2.2p50.f{step:03d}")
        with open(paths[-1], "wb") as out:
            _gfs_forecast(out, cycle, step)
    return paths
