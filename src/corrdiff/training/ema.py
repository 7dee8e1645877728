"""Exponential moving average of weights, with EDM's half-life in samples and ramp-up."""

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of a module whose weights trail the trained ones; used for validation and sampling."""

    def __init__(self, module: nn.Module, halflife_samples: float, rampup: float | None = 0.05):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.halflife_samples = halflife_samples
        self.rampup = rampup

    def beta(self, batch_size: int, samples_seen: int) -> float:
        """Decay for one step of `batch_size` samples after `samples_seen`: 0.5 ** (batch / half-life)."""
        halflife = self.halflife_samples
        if self.rampup is not None:
            halflife = min(halflife, samples_seen * self.rampup)
        return 0.5 ** (batch_size / max(halflife, 1e-8))

    @torch.no_grad()
    def update(self, module: nn.Module, batch_size: int, samples_seen: int) -> None:
        beta = self.beta(batch_size, samples_seen)
        for ema_p, p in zip(self.module.parameters(), module.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - beta)
        for ema_b, b in zip(self.module.buffers(), module.buffers()):
            ema_b.copy_(b)
