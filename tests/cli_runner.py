"""Driving the real `corrdiff` command in tests: `invoke`, what success and a refusal look like, a tiny run."""

import logging

from typer.testing import CliRunner

from corrdiff.cli import app

# A run config's model, training, sampler and generation sections for two-step trainings of a tiny network.
TINY_RUN = {
    "model": {"preset": "tiny", "model_channels": 8, "attn_resolutions": []},
    "regression": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
    "diffusion": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
    "sampler": {"num_steps": 2},
    "generate": {"members": 2},
}


def invoke(*args):
    """`corrdiff ARGS…` in this process (arguments made strings); the CliRunner result."""
    # The CLI gives the corrdiff logger a handler on the stderr of the run that first needs one; each CliRunner
    # run has its own stderr, so the handler is made again for each.
    logging.getLogger("corrdiff").handlers.clear()
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
