"""A tiny trained run on files, shared by the API and model-package tests (trained once per test session)."""

import shutil

import netCDF4
import pytest
import yaml

import corrdiff

from tests.cli_runner import invoke, succeeded, TINY_RUN
from tests.data import fixtures

CONFIG = {"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN}

FIELDS = ["t2m", "u10", "refl", "t2m_regression", "u10_regression", "refl_regression"]
TIMES = ["2021-01-02T03:00:00", "2021-01-02T06:00:00"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(folder, run config path): the generic fixture data and both networks trained for two steps."""
    folder = tmp_path_factory.mktemp("api-run")
    fixtures.write_generic(folder / "data")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    return folder, config


# WRF's global attributes of a Lambert conformal grid (corrdiff.data.canonical.wrf_grid_mapping reads them)
LAMBERT = {"MAP_PROJ": 1, "TRUELAT1": 10.0, "TRUELAT2": 40.0, "STAND_LON": 120.0, "MOAD_CEN_LAT": 22.0}


@pytest.fixture(scope="session")
def projected(trained, tmp_path_factory):
    """The trained run's outputs on a Lambert fine grid: {"run": the file `generate` writes from the run folder,
    "package": the model package exported from it, "from_package": what `generate --model` writes with it,
    "forecast": the coarse input file}. The targets' file says the grid is Lambert (WRF's attributes)."""
    folder, _ = trained
    root = tmp_path_factory.mktemp("lambert")
    shutil.copytree(folder / "data", root / "data")
    with netCDF4.Dataset(root / "data" / "fine.nc", "a") as nc:
        nc.setncatts(LAMBERT)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "run_dir": str(folder / "run")}))
    forecast = shutil.copy(folder / "data" / "coarse.nc", root / "forecast.nc")
    times = ["--times", TIMES[0]]
    out = {"run": root / "run.nc", "package": root / "model", "from_package": root / "package.nc", "forecast": forecast}
    succeeded(invoke("generate", config, "--out", out["run"], "--input", forecast, "--quiet", *times))
    succeeded(invoke("export", folder / "run", "--config", config, "--out", out["package"]))
    succeeded(invoke("generate", "--model", out["package"], "--input", forecast, "--out", out["from_package"],
                     "--quiet", *times))
    return out


@pytest.fixture(scope="module")
def model(trained):
    """The tiny run loaded through the API on the CPU."""
    folder, config = trained
    return corrdiff.load(folder / "run", config=config, device="cpu")
