"""The PhysicsNeMo peer fixtures (made by fixtures/make_physicsnemo_fixtures.py) and helpers to use them."""

from pathlib import Path

import numpy as np
import torch

from corrdiff.data import ChannelStats, Normalization
from corrdiff.interop.convert import convert
from corrdiff.checkpoint import network_for

FIXTURES = Path(__file__).parent / "fixtures"
SHAPE = (24, 16)
INPUTS, TARGETS = ["z500", "t850", "u10m"], ["t2m", "v10m"]
# Max |corrdiff − PhysicsNeMo| over std(PhysicsNeMo's output). The networks agree to float32 round-off: the
# fixtures measure at most 8e-6 (random weights of scale 0.2, so the activations inside are large).
TOLERANCE = 2e-5


def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as data:
        return {k: data[k] for k in data.files}


def stats() -> Normalization:
    """Channel names (3 inputs, 2 targets) and a normalisation for the fixtures' networks."""
    return Normalization(ChannelStats(INPUTS, [5500.0, 270.0, 0.0], [300.0, 10.0, 5.0]),
                         ChannelStats(TARGETS, [285.0, 0.0], [8.0, 4.0]))


def grid() -> tuple[np.ndarray, np.ndarray]:
    """A regular fine grid (24, 16) of lat and lon in degrees."""
    lon, lat = np.meshgrid(np.linspace(118.0, 122.0, SHAPE[1]), np.linspace(21.0, 26.0, SHAPE[0]))
    return lat, lon


def network(name: str, kind: str):
    """(corrdiff network converted from fixture `name`.mdlus in eval mode, its `Converted`)."""
    converted = convert(FIXTURES / f"{name}.mdlus", kind, stats())
    layout = converted.layout
    net = network_for(layout.unet, kind, layout.sigma_data, layout.scale_condition)
    net.load_state_dict(converted.weights)
    return net.eval().requires_grad_(False), converted


def relative_error(got: torch.Tensor, reference: np.ndarray) -> float:
    """max |got − reference| / std(reference)."""
    return float(np.abs(got.detach().numpy() - reference).max() / reference.std())
