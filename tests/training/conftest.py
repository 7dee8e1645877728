"""Fixtures shared by the training tests."""

import pytest

from corrdiff.training.sample_check import SampleCheck


@pytest.fixture
def scripted(monkeypatch):
    """Make the sample check return the fair CRPS values of `values` in turn (a known answer for the pointers)."""
    values = []

    def run(self, denoiser):
        crps = values.pop(0)
        return {"val_crps_fair": crps, "val_spread_skill": 1.0, "val_power_ratio": 1.0, "val_lsd": 0.0,
                "sample_s": 0.0}

    monkeypatch.setattr(SampleCheck, "run", run)
    return values
