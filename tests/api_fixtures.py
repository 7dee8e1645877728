"""A tiny trained run on files, shared by the API and model-package tests (trained once per test session)."""

import logging

import pytest
import yaml
from typer.testing import CliRunner

from corrdiff.cli import app
from tests.data import fixtures

CONFIG = {
    "data": "data/spec.yaml", "run_dir": "run",
    "model": {"preset": "tiny", "model_channels": 8, "attn_resolutions": []},
    "regression": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
    "diffusion": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
    "sampler": {"num_steps": 2},
    "generate": {"members": 2},
}
FIELDS = ["t2m", "u10", "refl", "t2m_regression", "u10_regression", "refl_regression"]
TIMES = ["2021-01-02T03:00:00", "2021-01-02T06:00:00"]


def invoke(*args):
    logging.getLogger("corrdiff").handlers.clear()  # a handler on this run's stderr is made again
    return CliRunner().invoke(app, [str(a) for a in args])


def succeeded(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def refused(result) -> str:
    """The one `error:` line of a command that stopped with exit code 2, and no traceback."""
    assert result.exit_code == 2, result.output + repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


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
