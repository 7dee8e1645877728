"""A tiny trained run on files, shared by the API and model-package tests (trained once per test session)."""


import pytest
import yaml

from tests.cli import invoke, succeeded, TINY_RUN
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
