"""The PhysicsNeMo peer fixtures (made by fixtures/make_physicsnemo_fixtures.py) and helpers to use them."""

from pathlib import Path

import numpy as np
import torch

from corrdiff.data import ChannelStats, Normalization
from corrdiff.diffusion import DiffusionCondition, edm_sample, SamplerConfig
from corrdiff.diffusion.sampler import use_arithmetic
from corrdiff.interop.convert import convert, import_physicsnemo
from corrdiff.networks import network_for
from corrdiff.seeding import member_generator

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


def imported_run(out: Path, diffusion: str = "diffusion"):
    """The fixtures' regression network and denoiser `diffusion` imported as a run folder `out`, on `grid()`."""
    return import_physicsnemo(out, stats(), *grid(), regression=FIXTURES / "regression.mdlus",
                              diffusion=FIXTURES / f"{diffusion}.mdlus")


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


# PhysicsNeMo's own inference (fixture keys parity_*): network, sampler settings and the seed of sample 0 (its
# `StackedRandomGenerator` seeds sample k with seed + k). The condition is y[:1] for every sample.
PARITY = {
    "parity_churn": ("diffusion", dict(num_steps=18, sigma_max=80.0, S_churn=40.0), 0),
    "parity_window": ("diffusion", dict(num_steps=18, sigma_max=80.0, S_churn=40.0, S_min=0.05, S_max=50.0), 0),
    "parity_scaled": ("diffusion_scaled", dict(num_steps=18, sigma_max=80.0, S_churn=40.0), 5),
    "parity_euler": ("diffusion", dict(solver="euler", num_steps=8, sigma_max=80.0), 0),
}
PARITY_TOLERANCE = 1e-5  # complete samplers in PhysicsNeMo's arithmetic: measured ≤ 3e-6


def parity_residual(key: str, y: torch.Tensor, norm: str = "physicsnemo", churn: str = "physicsnemo") -> torch.Tensor:
    """corrdiff's residual (2, C, H, W) for PhysicsNeMo's run `key`, with PhysicsNeMo's seeds, GroupNorm of the
    arithmetic `norm` and churn of the arithmetic `churn` (each "edm" or "physicsnemo"): the parts one by one."""
    name, fields, seed = PARITY[key]
    denoiser, converted = network(name, "diffusion")
    condition = DiffusionCondition.from_unet(converted.layout.unet)
    y0 = y[:1]
    mean = None
    if converted.layout.unet.condition_on_mean:
        regression, _ = network("regression", "regression")
        use_arithmetic("physicsnemo", regression)
        mean = regression(y0)
    field = condition.whole_domain(condition.field(y0, mean)).expand(2, -1, -1, -1)
    use_arithmetic(norm, denoiser)
    generators = [member_generator(seed, k, arithmetic="physicsnemo") for k in range(2)]
    return edm_sample(lambda x, sigma: denoiser(x, sigma, field), (2, *SHAPE), [0, 1], seed,
                      SamplerConfig(arithmetic=churn, **fields), generators=generators)
