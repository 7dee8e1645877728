"""Real files through the whole chain (../shared/realdata; skipped when absent):

- the WRF parent (30 km) → nest (10 km) pair trains, generates and scores; the interpolation baseline's T2 MAE is
  the parent-vs-nest difference of docs/real-data.md;
- a model with u10/v10 inputs downscales the real GFS GRIB2 through `corrdiff generate --input`, and the real NAM
  GRIB2 (Lambert, 2-D lat/lon) through `Downscaler.downscale(path)`: ensembles with u and v.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import corrdiff
from tests.cli_runner import invoke, succeeded, TINY_RUN

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")]
GFS = REALDATA / "gfs.t12z.pgrbf120.2p5deg.grib2"
NAM = REALDATA / "nam.t00z.awp21100.tm00.grib2"
RUN = {**TINY_RUN, "regression": {**TINY_RUN["regression"], "batch_size": 1},
       "diffusion": {**TINY_RUN["diffusion"], "batch_size": 1}, "generate": {"members": 2, "split": "train"}}


def test_wrf_parent_to_nest_trains_generates_and_scores(tmp_path):
    pytest.importorskip("netCDF4")
    t2 = {"variables": ["t2"], "rename": {"t2": "T2"}}
    spec = {"inputs": {"paths": str(REALDATA / "wrf_tip_d1.nc"), **t2},
            "targets": {"paths": str(REALDATA / "wrf_tip_d2.nc"), **t2},
            "splits": {"train": {"start": "2005-09-21T00:00", "end": "2005-09-21T00:00"}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": "spec.yaml", "run_dir": "run", **RUN}))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    succeeded(invoke("generate", config, "--out", tmp_path / "ens.nc", "--quiet"))
    succeeded(invoke("score", tmp_path / "ens.nc", "--truth", tmp_path / "spec.yaml", "--out", tmp_path / "scores.nc",
                     "--quiet"))
    with xr.open_dataset(tmp_path / "ens.nc") as ens:
        assert ens["t2"].shape == (1, 2, 180, 270) and np.isfinite(ens["t2"].values).all()
        assert ens["crs"].attrs["grid_mapping_name"] == "lambert_conformal_conic"  # the nest's projection
    with xr.open_dataset(tmp_path / "scores.nc") as scores:
        interp = float(scores["mae"].sel(model="interp", variable="t2"))
    assert 0.9 < interp < 1.2  # K: 1.09 on the nest's projection axes (scripts/curvilinear_regrid_study.py)


def write_us_data(folder: Path) -> Path:
    """Coarse (1°) and fine (0.25°) u10/v10 over the central US, 12 three-hourly times, and their spec."""
    folder.mkdir(parents=True, exist_ok=True)
    times = pd.date_range("2020-01-01", periods=12, freq="3h")
    hours = np.arange(len(times))[:, None, None]

    def winds(lat, lon):
        grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
        u = 5 * np.sin(np.radians(20 * grid_lat) + 0.3 * hours) + 0.1 * (grid_lon + 100)
        v = 4 * np.cos(np.radians(15 * grid_lon) - 0.2 * hours)
        return {"u10": (("time", "lat", "lon"), u.astype(np.float32), {"units": "m s-1"}),
                "v10": (("time", "lat", "lon"), v.astype(np.float32), {"units": "m s-1"})}

    for name, lat, lon in (("coarse", np.arange(30.0, 45.1), np.arange(-110.0, -89.9)),
                           ("fine", 36.0 + 0.25 * np.arange(16), -100.0 + 0.25 * np.arange(16))):
        xr.Dataset(winds(lat, lon), coords={"time": times, "lat": lat, "lon": lon}).to_netcdf(folder / f"{name}.nc")
    spec = {"inputs": {"paths": "coarse.nc", "variables": ["u10", "v10"]},
            "targets": {"paths": "fine.nc", "variables": ["u10", "v10"]},
            "splits": {"train": {"start": "2020-01-01T00", "end": "2020-01-02T09"}}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


@pytest.fixture(scope="module")
def us_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("us-run")
    write_us_data(folder / "data")
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN}))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    return folder, config


def test_generate_on_the_real_gfs_grib2_gives_u_and_v(us_run):
    pytest.importorskip("cfgrib")
    folder, config = us_run
    out = folder / "gfs_ens.nc"
    succeeded(invoke("generate", config, "--out", out, "--input", GFS, "--quiet"))
    with xr.open_dataset(out) as ens:
        assert str(ens["time"].values[0])[:13] == "2011-01-15T12"  # cycle 2011-01-10 12 UTC + 120 h
        for name in ("u10", "v10"):
            assert ens[name].shape == (1, 2, 16, 16) and np.isfinite(ens[name].values).all()
        assert float(ens["lead_time"].values[0]) == 120.0  # the forecast's context is kept


def test_downscale_on_the_real_nam_grib2_gives_u_and_v(us_run):
    pytest.importorskip("cfgrib")
    folder, config = us_run
    model = corrdiff.load(folder / "run", config=config, device="cpu")
    ens = model.downscale(NAM, members=2)
    for name in ("u10", "v10"):
        assert ens[name].shape == (1, 2, 16, 16) and np.isfinite(ens[name].values).all()
    opened = corrdiff.open_inputs(NAM, ["u10", "v10"])
    assert opened["u10"].dims == ("time", "y", "x") and opened["lat"].ndim == 2  # NAM's Lambert grid, 2-D lat/lon
    np.testing.assert_array_equal(model.downscale(opened, members=2)["v10"].values, ens["v10"].values)
