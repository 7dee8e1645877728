"""The Python API refuses impossible arguments where they are read, as the command line does (issue 22 item 4):
a `ConfigError` of one line naming the argument, the value and what is allowed, before any work is done."""

import pytest

import corrdiff
from corrdiff.errors import ConfigError
from tests.api_fixtures import TIMES, trained, model  # noqa: F401  (fixtures)
from tests.cli_runner import invoke, succeeded


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    folder, config = trained
    out = tmp_path_factory.mktemp("package") / "model"
    succeeded(invoke("export", folder / "run", "--config", config, "--out", out))
    return out


@pytest.mark.parametrize("where", ["run folder", "package"])
def test_load_takes_only_a_checkpoint_it_has(trained, package, where):
    """A package holds one checkpoint of each kind: `which` was ignored for it, and "worst" loaded "best"."""
    path = trained[0] / "run" if where == "run folder" else package
    with pytest.raises(ConfigError, match=r"^which 'worst': expected one of 'latest', 'best', 'best-crps'$"):
        corrdiff.load(path, which="worst")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", ""])
def test_load_names_a_device_that_is_not_one(trained, device):
    with pytest.raises(ConfigError, match=rf"^device '{device}': expected 'auto', 'cpu', 'cuda' or 'cuda:N'$"):
        corrdiff.load(trained[0] / "run", device=device)


BAD_DOWNSCALE = {  # keyword: (value, what the one line says)
    "members 0": ({"members": 0}, r"^members 0: expected a whole number of at least 1$"),
    "members True": ({"members": True}, r"^members True: expected a whole number of at least 1$"),
    "members 1.5": ({"members": 1.5}, r"^members 1.5: expected a whole number of at least 1$"),
    "seed -1": ({"seed": -1}, r"^seed -1: expected a whole number of at least 0$"),
    "seed 'a'": ({"seed": "a"}, r"^seed 'a': expected a whole number of at least 0$"),
    "seed 2.5": ({"seed": 2.5}, r"^seed 2.5: expected a whole number of at least 0$"),
    "member 'first'": ({"member": "first"}, r"^member 'first': expected a member's number \(e.g. 0\), 'mean' or 'all'$"),
    "member 1.0": ({"member": 1.0}, r"^member 1.0: expected a member's number"),
    "rename a list": ({"rename": ["t2m"]}, r"^rename \['t2m'\]: expected a dict \{channel: its name in the files\}"),
    "rename to a number": ({"rename": {"t2m": 2}}, r"^rename \{'t2m': 2\}: expected a dict"),
}


@pytest.mark.parametrize("bad", sorted(BAD_DOWNSCALE))
def test_downscale_refuses_an_impossible_argument(model, trained, bad):
    keywords, message = BAD_DOWNSCALE[bad]
    with pytest.raises(ConfigError, match=message):
        model.downscale(trained[0] / "data" / "coarse.nc", **{"members": 1, "times": TIMES[:1], **keywords})


def test_regression_and_inputs_refuse_a_member_that_is_not_one(model, trained):
    with pytest.raises(ConfigError, match=r"^member 'first': expected"):
        model.regression(trained[0] / "data" / "coarse.nc", member="first")
    with pytest.raises(ConfigError, match=r"^member True: expected"):
        model.inputs(trained[0] / "data" / "coarse.nc", member=True)
