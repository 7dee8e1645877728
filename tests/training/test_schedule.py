"""The learning-rate factor: warm-up in steps or in samples, then constant or cosine; the paper recipe's ramp."""

import math

import pytest

from corrdiff.config import TrainSection
from corrdiff.training.schedule import lr_factor, warmup_length


def test_warmup_in_steps_then_cosine_to_zero_at_the_last_step():
    section = TrainSection(steps=110, warmup_steps=10, schedule="cosine")
    assert [lr_factor(s, section) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(10, section) == 1.0  # the decay starts from 1
    assert lr_factor(60, section) == pytest.approx(0.5)  # half-way through the decay: cos(π/2)
    assert lr_factor(110, section) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(500, section) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0


def test_no_warmup_and_constant_schedule():
    section = TrainSection(steps=100, warmup_steps=0, schedule="constant")
    assert {lr_factor(s, section) for s in (0, 1, 99, 1000)} == {1.0}


def test_warmup_in_samples_grows_with_samples_seen_and_replaces_warmup_steps():
    section = TrainSection(batch_size=256, warmup_steps=3, warmup_samples=2560, schedule="constant")
    assert warmup_length(section) == 10  # 2560 samples at 256 a step; warmup_steps is ignored
    assert [lr_factor(s, section) for s in (0, 1, 4, 9, 10, 10_000)] == [0.1, 0.2, 0.5, 1.0, 1.0, 1.0]


def test_warmup_in_samples_that_ends_inside_a_step_reaches_exactly_one():
    section = TrainSection(batch_size=4, warmup_samples=10, schedule="constant")  # 2.5 steps
    assert [lr_factor(s, section) for s in range(4)] == [0.4, 0.8, 1.0, 1.0]


def test_cosine_after_a_warmup_in_samples_starts_at_one_and_ends_at_zero():
    section = TrainSection(steps=20, batch_size=8, warmup_samples=40, schedule="cosine")  # 5 steps
    assert lr_factor(4, section) == 1.0 and lr_factor(5, section) == 1.0
    assert lr_factor(20, section) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(12, section) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))


def test_paper_recipe_ramps_over_ten_million_samples_then_holds_the_rate():
    section = TrainSection(recipe="paper")
    ramp_steps = 10_000_000 / 256  # 39,062.5 steps
    assert lr_factor(0, section) == pytest.approx(256 / 10_000_000)
    assert lr_factor(19_530, section) == pytest.approx(19_531 / ramp_steps)
    assert lr_factor(39_062, section) == 1.0
    assert {lr_factor(s, section) for s in (39_063, 400_000, section.steps - 1)} == {1.0}
