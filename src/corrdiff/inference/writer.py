"""Writing the ensemble file (layout: `corrdiff.ensemble_file`) one time at a time.

Every planned time has its slot from the start; after a time's fields are written, its flag in
`generation_complete(time)` is set and the file is synced. A crash therefore loses at most the time
being written, and reopening the file tells which times are still to do.
"""

from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from corrdiff import ensemble_file
from corrdiff.ensemble_file import ENGINES, ENSEMBLE_DIMS, FIELD_DIMS, FLAG, regression_name
from corrdiff.errors import OutputError


class EnsembleWriter:
    """Creates (or reopens, to resume) an ensemble file and writes one time slot at a time."""

    def __init__(self, path, times, members, lat, lon, channels, channel_attrs, global_attrs, fmt="netcdf"):
        self.path, self.fmt = Path(path), fmt
        self.times = np.asarray(times, dtype="datetime64[ns]")
        self.channels = list(channels)
        if self.path.exists():
            self._check_resumable(members)
        else:
            layout = ensemble_file.template(self.times, members, lat, lon, self.channels, channel_attrs, global_attrs)
            ensemble_file.write(layout, self.path, fmt)  # the file appears complete in layout, or not at all
        self._nc = netCDF4.Dataset(self.path, "a") if fmt == "netcdf" else None

    def _check_resumable(self, members: int) -> None:
        with xr.open_dataset(self.path, engine=ENGINES[self.fmt]) as ds:
            same = (ds.sizes.get("member") == members and ds.sizes.get("time") == len(self.times)
                    and np.array_equal(ds["time"].values.astype("datetime64[ns]"), self.times)
                    and all(c in ds for c in self.channels))
        if not same:
            raise OutputError(
                f"{self.path} exists but holds other times, members or variables than this generation asks for; "
                "choose another --out, or delete the file to start over"
            )

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
                self._nc[regression_name(name)][index] = mean[c].astype(np.float32)
            self._nc.sync()  # the data reach the disk before the flag that declares them written
            self._nc[FLAG][index] = 1
            self._nc.sync()
            return
        region = {"time": slice(index, index + 1)}
        fields = {}
        for c, name in enumerate(self.channels):
            fields[name] = (ENSEMBLE_DIMS, ensemble[None, :, c].astype(np.float32))
            fields[regression_name(name)] = (FIELD_DIMS, mean[None, c].astype(np.float32))
        xr.Dataset(fields).to_zarr(self.path, region=region, consolidated=False)
        xr.Dataset({FLAG: (("time",), np.ones(1, dtype="int8"))}).to_zarr(self.path, region=region, consolidated=False)

    def close(self) -> None:
        if self._nc is not None:
            self._nc.close()
            self._nc = None
