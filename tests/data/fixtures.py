"""Tiny paired datasets written by the tests: an ERA5-like coarse store and a WRF-like fine store.

Coarse: (time, level, latitude, longitude), latitude descending, longitude 0..360 — as ERA5 comes.
Fine: (time, south_north, west_east) with 2-D XLAT/XLONG on a slightly rotated grid — as WRF comes.
The fields are analytic (linear in lat/lon), so bilinear interpolation reproduces them exactly.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

TIMES = pd.date_range("2021-01-01", periods=12, freq="3h")
LEVELS = [500.0, 850.0]


def linear(lat, lon, t, a=1.0):
    """An analytic field that bilinear interpolation reproduces exactly."""
    return a * (0.5 * lat + 0.25 * lon + t)


def coarse_dataset(times=TIMES) -> xr.Dataset:
    lat = np.arange(30.0, 14.9, -1.0)  # descending, 30..15
    lon = np.arange(110.0, 131.0, 1.0)
    t_index = np.arange(len(times), dtype=float)[:, None, None]
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    t2m = 280 + linear(grid_lat[None], grid_lon[None], t_index)
    levels = np.stack([240 + linear(grid_lat[None], grid_lon[None], t_index, a=k + 1) for k in range(len(LEVELS))], 1)
    ds = xr.Dataset(
        {
            "t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K", "long_name": "2 m temperature"}),
            "u10": (("time", "latitude", "longitude"), (0.1 * t2m - 28).astype(np.float32), {"units": "m s-1"}),
            "t": (("time", "level", "latitude", "longitude"), levels.astype(np.float32), {"units": "K"}),
        },
        coords={"time": times, "level": ("level", LEVELS, {"units": "hPa"}), "latitude": lat, "longitude": lon},
    )
    return ds


def fine_grid(shape=(16, 24)):
    """A slightly rotated 2-D grid inside the coarse domain (as a Lambert-conformal WRF grid is)."""
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    lat = 20.0 + 0.2 * j + 0.01 * i
    lon = 115.0 + 0.25 * i - 0.01 * j
    return lat, lon


def fine_dataset(times=TIMES, shape=(16, 24)) -> xr.Dataset:
    lat, lon = fine_grid(shape)
    t_index = np.arange(len(times), dtype=float)[:, None, None]
    rng = np.random.default_rng(0)
    t2m = 280 + linear(lat[None], lon[None], t_index) + rng.normal(0, 0.5, (len(times), *shape))
    refl = np.clip(rng.gamma(0.5, 8.0, (len(times), *shape)), 0, None)
    dims = ("time", "south_north", "west_east")
    return xr.Dataset(
        {
            "t2m": (dims, t2m.astype(np.float32), {"units": "K", "long_name": "2 m temperature"}),
            "u10": (dims, (0.1 * t2m - 28).astype(np.float32), {"units": "m s-1", "long_name": "10 m eastward wind"}),
            "refl": (dims, refl.astype(np.float32), {"units": "dBZ", "long_name": "radar reflectivity"}),
        },
        coords={"time": times, "XLAT": (dims[1:], lat), "XLONG": (dims[1:], lon)},
    )


def static_dataset(shape=(16, 24)) -> xr.Dataset:
    lat, lon = fine_grid(shape)
    orography = 500 * np.exp(-((lat - 21.5) ** 2 + (lon - 118) ** 2))
    dims = ("south_north", "west_east")
    return xr.Dataset({"orography": (dims, orography.astype(np.float32), {"units": "m"})},
                      coords={"XLAT": (dims, lat), "XLONG": (dims, lon)})


def write_spec(folder: Path, inputs="coarse.nc", targets="fine.nc", static="static.nc", **extra) -> Path:
    spec = {
        "inputs": {"paths": inputs, "variables": ["t2m", "u10", "t@850"]},
        "targets": {"paths": targets, "variables": ["t2m", "u10", "refl"]},
        "splits": {"train": {"start": "2021-01-01T00", "end": "2021-01-02T02"},
                   "test": {"start": "2021-01-02T03", "end": "2021-01-02T21"}},
    }
    if static:
        spec["static"] = {"paths": static, "variables": ["orography"]}
    spec.update(extra)
    path = Path(folder) / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_generic(folder: Path, fmt: str = "netcdf", **spec_extra) -> Path:
    """Coarse, fine and static stores plus a spec; returns the spec path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".zarr" if fmt == "zarr" else ".nc"
    for name, ds in (("coarse", coarse_dataset()), ("fine", fine_dataset()), ("static", static_dataset())):
        if fmt == "zarr":
            ds.to_zarr(folder / f"{name}{suffix}", zarr_format=3, consolidated=False)
        else:
            ds.to_netcdf(folder / f"{name}{suffix}")
    return write_spec(folder, f"coarse{suffix}", f"fine{suffix}", f"static{suffix}", **spec_extra)


def write_cwa(folder: Path) -> Path:
    """A tiny store in the CorrDiff Taiwan (CWA) layout: channel-stacked `era5` and `cwb` on one grid."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fine = fine_dataset()
    coarse_on_fine = xr.Dataset({"t2m": fine["t2m"] + 1.0, "u10": fine["u10"] * 0.5, "t850": fine["t2m"] - 30})
    era5 = np.stack([coarse_on_fine[v].values for v in ("t2m", "u10", "t850")], axis=1)
    cwb = np.stack([fine[v].values for v in ("refl", "t2m", "u10")], axis=1)
    dims = ("south_north", "west_east")
    store = xr.Dataset(
        {
            "era5": (("time", "era5_channel", *dims), era5),
            "cwb": (("time", "cwb_channel", *dims), cwb),
            "era5_variable": ("era5_channel", ["temperature_2m", "eastward_wind_10m", "temperature"]),
            "era5_pressure": ("era5_channel", [np.nan, np.nan, 850.0]),
            "cwb_variable": ("cwb_channel", ["maximum_radar_reflectivity", "temperature_2m", "eastward_wind_10m"]),
            "cwb_pressure": ("cwb_channel", [np.nan, np.nan, np.nan]),
            "XLAT": (dims, fine["XLAT"].values),
            "XLONG": (dims, fine["XLONG"].values),
        },
        coords={"time": fine["time"].values},
    )
    store.to_zarr(folder / "cwa.zarr", zarr_format=2, consolidated=True)
    spec = {
        "layout": "cwa",
        "inputs": {"paths": "cwa.zarr", "variables": ["temperature_2m", "eastward_wind_10m", "temperature@850"]},
        "targets": {"paths": "cwa.zarr", "variables": ["temperature_2m", "maximum_radar_reflectivity"]},
        "splits": {"train": {"start": "2021-01-01", "end": "2021-01-02T02"}},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_grib(path: Path, field: xr.DataArray, short_name: str = "2t") -> None:
    """A GRIB2 file of a (time, latitude, longitude) field on a regular lat/lon grid, one message per time."""
    import eccodes

    lat, lon = field["latitude"].values, field["longitude"].values
    with open(path, "wb") as out:
        for t, time in enumerate(pd.to_datetime(field["time"].values)):
            gid = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
            try:
                keys = {"Ni": lon.size, "Nj": lat.size,
                        "latitudeOfFirstGridPointInDegrees": float(lat[0]),
                        "latitudeOfLastGridPointInDegrees": float(lat[-1]),
                        "longitudeOfFirstGridPointInDegrees": float(lon[0]),
                        "longitudeOfLastGridPointInDegrees": float(lon[-1]),
                        "iDirectionIncrementInDegrees": float(abs(lon[1] - lon[0])),
                        "jDirectionIncrementInDegrees": float(abs(lat[1] - lat[0])),
                        "jScansPositively": int(lat[1] > lat[0]),
                        "dataDate": int(time.strftime("%Y%m%d")), "dataTime": int(time.strftime("%H%M")),
                        "shortName": short_name, "bitsPerValue": 24}
                for key, value in keys.items():
                    eccodes.codes_set(gid, key, value)
                eccodes.codes_set_values(gid, field.values[t].astype(np.float64).ravel())
                eccodes.codes_write(gid, out)
            finally:
                eccodes.codes_release(gid)
