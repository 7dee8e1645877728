"""Tiny synthetic forecasts and truth written in the layout of `corrdiff generate`.

A case is a hidden mean field mu (time, y, x) per variable; truth = mu + sigma·noise and every member =
mu + sigma·independent noise, so the ensemble is perfectly calibrated (truth and members exchangeable),
and the regression mean is mu itself.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from corrdiff import ensemble_file

UNITS = {"u": ("m s-1", "eastward wind"), "v": ("m s-1", "northward wind"), "vorticity": ("s-1", "relative vorticity")}
SCALE = {"u": 5.0, "v": 5.0, "vorticity": 1e-4}


def grid(shape=(16, 16), spacing_deg: float = 0.09):
    """2-D lat/lon of a regular grid of ~10 km spacing near 23°N."""
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return 22.0 + spacing_deg * j, 120.0 + spacing_deg * i


def case(times=6, members=4, shape=(16, 16), variables=("u", "v", "vorticity"), sigma=0.3, seed=0):
    """(truth, ensemble, regression): dicts of arrays (time, y, x), (time, member, y, x), (time, y, x)."""
    rng = np.random.default_rng(seed)
    truth, ensemble, regression = {}, {}, {}
    for name in variables:
        scale = SCALE.get(name, 1.0)
        mu = scale * rng.normal(size=(times, *shape))
        truth[name] = (mu + scale * sigma * rng.normal(size=mu.shape)).astype(np.float32)
        ensemble[name] = (mu[:, None] + scale * sigma * rng.normal(size=(times, members, *shape))).astype(np.float32)
        regression[name] = mu.astype(np.float32)
    return truth, ensemble, regression


def time_axis(n: int, start: str = "2022-07-01") -> np.ndarray:
    return pd.date_range(start, periods=n, freq="6h").values.astype("datetime64[ns]")


def coords(times, shape, lat_lon=None):
    lat, lon = grid(shape) if lat_lon is None else lat_lon
    return {"time": times, "lat": (("y", "x"), lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": (("y", "x"), lon, {"units": "degrees_east", "standard_name": "longitude"})}


def attrs_of(name):
    units, long_name = UNITS.get(name, ("1", name))
    return {"units": units, "long_name": long_name}


def write_truth(path: Path, truth: dict, times=None) -> Path:
    """Truth store: (time, y, x) per variable with units, 2-D lat/lon."""
    first = next(iter(truth.values()))
    times = time_axis(first.shape[0]) if times is None else times
    ds = xr.Dataset({n: (("time", "y", "x"), a, attrs_of(n)) for n, a in truth.items()},
                    coords(times, first.shape[-2:]))
    ds.to_netcdf(path)
    return Path(path)


def write_ensemble(path: Path, ensemble: dict, regression: dict | None = None, times=None, complete=None,
                   fmt: str = "netcdf", lat_lon=None, attrs: dict | None = None) -> Path:
    """An ensemble file as `corrdiff generate` writes it (`ensemble_file.template`), filled with the arrays."""
    first = next(iter(ensemble.values()))
    times = time_axis(first.shape[0]) if times is None else times
    lat, lon = grid(first.shape[-2:]) if lat_lon is None else lat_lon
    attrs = attrs or {n: attrs_of(n) for n in ensemble}
    ds = ensemble_file.template(times, first.shape[1], lat, lon, list(ensemble), attrs, regression=bool(regression))
    for n, a in ensemble.items():
        ds[n] = ds[n].copy(data=np.asarray(a, np.float32))
    for n, a in (regression or {}).items():
        ds[ensemble_file.regression_name(n)] = ds[ensemble_file.regression_name(n)].copy(data=np.asarray(a, np.float32))
    flag = np.ones(first.shape[0], np.int8) if complete is None else np.asarray(complete, np.int8)
    ds[ensemble_file.FLAG] = ds[ensemble_file.FLAG].copy(data=flag)
    return ensemble_file.write(ds, path, fmt)


def write_case(folder: Path, **options) -> tuple[Path, Path, dict]:
    """A calibrated case written as (ensemble file, truth file, arrays)."""
    truth, ensemble, regression = case(**options)
    folder = Path(folder)
    return (write_ensemble(folder / "ens.nc", ensemble, regression), write_truth(folder / "truth.nc", truth),
            {"truth": truth, "ensemble": ensemble, "regression": regression})
