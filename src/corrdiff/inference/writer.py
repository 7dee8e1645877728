"""The ensemble file: CF NetCDF (or Zarr), dims (time, member, y, x), written one time at a time.

Every planned time has its slot from the start; after a time's fields are written, its flag in
`generation_complete(time)` is set and the file is synced. A crash therefore loses at most the time
being written, and reopening the file tells which times are still to do.
"""

import datetime as dt
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from corrdiff.errors import OutputError

TIME_UNITS = "hours since 1970-01-01 00:00:00"
FLAG = "generation_complete"


def grid_spacing_km(lat: np.ndarray, lon: np.ndarray) -> float:
    """Mean distance between neighbouring grid points (haversine, Earth radius 6371 km)."""
    def dist(lat1, lon1, lat2, lon2):
        p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
        h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
        return 2 * 6371.0 * np.arcsin(np.sqrt(h))

    dx = dist(lat[:, :-1], lon[:, :-1], lat[:, 1:], lon[:, 1:]) if lat.shape[1] > 1 else np.array([np.nan])
    dy = dist(lat[:-1], lon[:-1], lat[1:], lon[1:]) if lat.shape[0] > 1 else np.array([np.nan])
    return float(np.nanmean(np.concatenate([dx.ravel(), dy.ravel()])))


def hours_since_epoch(times: np.ndarray) -> np.ndarray:
    return (np.asarray(times, dtype="datetime64[s]").astype("int64") / 3600.0).astype("float64")


def template(times, members, lat, lon, channels, channel_attrs, global_attrs) -> xr.Dataset:
    """An all-NaN dataset with the output layout (lazy, chunked one time per chunk)."""
    import dask.array as da

    n_time, (height, width) = len(times), lat.shape
    data_vars = {}
    for name in channels:
        attrs = {"coordinates": "lat lon", **channel_attrs.get(name, {})}
        data_vars[name] = (("time", "member", "y", "x"),
                           da.full((n_time, members, height, width), np.nan, dtype="float32",
                                   chunks=(1, members, height, width)), attrs)
        reg_attrs = dict(attrs, long_name=f"regression mean of {attrs.get('long_name', name)}")
        data_vars[f"{name}_regression"] = (("time", "y", "x"),
                                           da.full((n_time, height, width), np.nan, dtype="float32",
                                                   chunks=(1, height, width)), reg_attrs)
    data_vars[FLAG] = (("time",), da.zeros(n_time, dtype="int8", chunks=1),
                       {"flag_values": np.array([0, 1], dtype="int8"), "flag_meanings": "pending written"})
    coords = {
        "time": ("time", np.asarray(times, dtype="datetime64[ns]"), {"standard_name": "time", "axis": "T"}),
        "member": ("member", np.arange(members, dtype="int32"), {"long_name": "ensemble member"}),
        "y": ("y", np.arange(height, dtype="int32"), {"long_name": "grid row index", "axis": "Y"}),
        "x": ("x", np.arange(width, dtype="int32"), {"long_name": "grid column index", "axis": "X"}),
        "lat": (("y", "x"), np.asarray(lat, dtype="float64"),
                {"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude"}),
        "lon": (("y", "x"), np.asarray(lon, dtype="float64"),
                {"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude"}),
    }
    attrs = {"Conventions": "CF-1.10", "grid_spacing_km": grid_spacing_km(np.asarray(lat), np.asarray(lon)),
             "history": f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} corrdiff generate",
             **global_attrs}
    return xr.Dataset(data_vars, coords, attrs)


class EnsembleWriter:
    """Creates (or reopens, to resume) an ensemble file and writes one time slot at a time."""

    def __init__(self, path, times, members, lat, lon, channels, channel_attrs, global_attrs, fmt="netcdf"):
        self.path, self.fmt = Path(path), fmt
        self.times = np.asarray(times, dtype="datetime64[ns]")
        self.channels = list(channels)
        if self.path.exists():
            self._check_resumable(members)
        else:
            self._create(template(self.times, members, lat, lon, self.channels, channel_attrs, global_attrs))
        self._nc = netCDF4.Dataset(self.path, "a") if fmt == "netcdf" else None

    def _create(self, ds: xr.Dataset) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if self.fmt == "netcdf":
            encoding = {v: {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}
                        for v in ds.data_vars if v != FLAG}
            encoding["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "float64"}
            ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        else:
            encoding = {"time": {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "float64"}}
            ds.to_zarr(tmp, mode="w", compute=True, encoding=encoding, zarr_format=3, consolidated=False)
        tmp.rename(self.path)  # the file appears complete in layout, or not at all

    def _check_resumable(self, members: int) -> None:
        with xr.open_dataset(self.path, engine=self._engine()) as ds:
            same = (ds.sizes.get("member") == members and ds.sizes.get("time") == len(self.times)
                    and np.array_equal(ds["time"].values.astype("datetime64[ns]"), self.times)
                    and all(c in ds for c in self.channels))
        if not same:
            raise OutputError(
                f"{self.path} exists but holds other times, members or variables than this generation asks for; "
                "choose another --out, or delete the file to start over"
            )

    def _engine(self) -> str:
        return "netcdf4" if self.fmt == "netcdf" else "zarr"

    def written(self) -> np.ndarray:
        """Boolean (time,) of the slots already complete."""
        if self._nc is not None:
            return np.asarray(self._nc[FLAG][:], dtype=bool)
        with xr.open_zarr(self.path, consolidated=False) as ds:
            return ds[FLAG].values.astype(bool)

    def write(self, index: int, ensemble: np.ndarray, mean: np.ndarray) -> None:
        """Write time slot `index`: ensemble (member, channel, y, x) and regression mean (channel, y, x)."""
        if self._nc is not None:
            for c, name in enumerate(self.channels):
                self._nc[name][index] = ensemble[:, c].astype(np.float32)
                self._nc[f"{name}_regression"][index] = mean[c].astype(np.float32)
            self._nc.sync()  # the data reach the disk before the flag that declares them written
            self._nc[FLAG][index] = 1
            self._nc.sync()
            return
        region = {"time": slice(index, index + 1)}
        fields = {}
        for c, name in enumerate(self.channels):
            fields[name] = (("time", "member", "y", "x"), ensemble[None, :, c].astype(np.float32))
            fields[f"{name}_regression"] = (("time", "y", "x"), mean[None, c].astype(np.float32))
        xr.Dataset(fields).to_zarr(self.path, region=region, consolidated=False)
        xr.Dataset({FLAG: (("time",), np.ones(1, dtype="int8"))}).to_zarr(self.path, region=region, consolidated=False)

    def close(self) -> None:
        if self._nc is not None:
            self._nc.close()
            self._nc = None
