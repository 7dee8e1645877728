"""EMA of weights: the half-life in samples means what it says, whatever the batch; the ramp-up shortens it early."""

import pytest
import torch

from corrdiff.config import TrainSection
from corrdiff.training.ema import EMA


def constant_layer(value: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(layer.weight, value)
    return layer


@pytest.mark.parametrize("batch", [1, 16, 256])
def test_gap_to_the_trained_weights_halves_after_one_half_life_of_samples(batch):
    halflife = 4096
    ema = EMA(constant_layer(0.0), halflife_samples=halflife, rampup=None)
    trained = constant_layer(1.0)
    seen = 0
    for _ in range(halflife // batch):
        seen += batch
        ema.update(trained, batch, seen)
    assert ema.module.weight.item() == pytest.approx(0.5, rel=1e-5)


def test_rampup_caps_the_half_life_at_a_fraction_of_the_samples_seen():
    ema = EMA(constant_layer(0.0), halflife_samples=500_000, rampup=0.05)
    assert ema.beta(256, 256_000) == pytest.approx(0.5 ** (256 / 12_800))  # 5 % of 256,000 samples
    assert ema.beta(256, 10**8) == pytest.approx(0.5 ** (256 / 500_000))  # the full half-life later on


def test_paper_recipe_uses_half_a_million_samples():
    section = TrainSection(recipe="paper")
    assert (section.ema_halflife_samples, section.ema_rampup) == (500_000, 0.05)
