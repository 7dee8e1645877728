"""Members that are time series (`generate.coherence`, docs/sampling.md): the starting noise of each member follows
an AR(1) process along the times of a generation, so that a deterministic sampler, which maps nearby noise to nearby
samples, gives members that are correlated from one time to the next.

A *series* is a run of the output's times at their most common step (`ensemble_file.series_starts`, the rule the
scores of time follow too): a time whose step from the time before differs (a missing input time, a jump) starts a
new series; so does the first time. Along a series, member m's starting noise is

    z_(m,t0) = eps_(m,t0),    z_(m,t) = rho·z_(m,t−1) + sqrt(1 − rho²)·eps_(m,t),

where eps_(m,t) is exactly the draw that independent sampling starts member m of time t from
(`corrdiff.diffusion.sampler.first_draws`, seeded by (seed, t, m)): each z is standard normal, consecutive ones
correlate by rho, and rho = 0 is independent sampling bit for bit. The state at any time is rebuilt from its
series' start by drawing the eps again (no network), so a resumed file, a rank's block of times under torchrun
and an uninterrupted run give the same values.
"""

import math
from collections.abc import Callable

import numpy as np
import torch

from corrdiff import ensemble_file
from corrdiff.config import CoherenceSection
from corrdiff.diffusion import SamplerConfig
from corrdiff.diffusion.solvers import SOLVERS
from corrdiff.errors import ConfigError


def check_sampler(coherence: CoherenceSection, sampler: SamplerConfig, channels: list[str]) -> None:
    """A ConfigError, in one line, when members as time series cannot be made with `sampler`: only a deterministic
    sampler maps correlated starting noise to correlated samples (the later draws of churn or an SDE are not
    correlated), and PhysicsNeMo's arithmetic draws the same noise at every time; or when a rho per channel does
    not name as many as the output has `channels`."""
    if not coherence.coherent:
        return
    coherence.rho_per_channel(channels)  # a rho per channel names as many as the output has
    what = f"generate.coherence.method {coherence.method} needs a deterministic sampler"
    if SOLVERS[sampler.solver].sde:
        deterministic = ", ".join(name for name, solver in SOLVERS.items() if not solver.sde)
        raise ConfigError(f"{what}: sampler.solver {sampler.solver} draws fresh noise at every step; choose one of "
                          f"{deterministic} (without churn), or generate.coherence.method independent")
    if sampler.S_churn > 0:
        raise ConfigError(f"{what}: sampler.S_churn {sampler.S_churn} draws fresh noise at every step; set "
                          "sampler.S_churn=0, or generate.coherence.method independent")
    if sampler.arithmetic != "edm":
        raise ConfigError(f"generate.coherence.method {coherence.method} needs sampler.arithmetic edm: "
                          f"{sampler.arithmetic} starts every time from the same noise")


def ar1_step(previous: torch.Tensor, draw: torch.Tensor, rho: float | tuple[float, ...]) -> torch.Tensor:
    """rho·previous + sqrt(1 − rho²)·draw: the next starting noise of a series (rho = 0 gives `draw`, bit for bit).
    `rho`: one value, or one per channel of (members, C, H, W)."""
    if not isinstance(rho, tuple):
        return previous * rho + draw * math.sqrt(1.0 - rho * rho)
    shape = (len(rho), 1, 1)  # the channel axis of (members, C, H, W)
    keep = torch.tensor(rho, dtype=draw.dtype, device=draw.device).reshape(shape)
    fresh = torch.tensor([math.sqrt(1.0 - r * r) for r in rho], dtype=draw.dtype, device=draw.device).reshape(shape)
    return previous * keep + draw * fresh


class SeriesLatents:
    """The starting noise of every member at each of a generation's times: `at(position)` (members, C, H, W).

    `times` (datetime64): the output's times, in its order; `draw(time)`: the independent first draw of every
    member at `time` (`corrdiff.inference.downscaling.first_draws`). Positions may be asked in any order: the
    state is carried forward from the last position asked within the same series, else rebuilt from the series'
    start, drawing only the eps of the times in between.
    """

    def __init__(self, rho: float | tuple[float, ...], times, draw: Callable[[np.datetime64], torch.Tensor]):
        self.rho, self.draw = (tuple(map(float, rho)) if isinstance(rho, tuple) else float(rho)), draw
        self.times = np.asarray(times, dtype="datetime64[ns]")
        self.starts = ensemble_file.series_starts(self.times)
        self._position: int | None = None
        self._state: torch.Tensor | None = None

    def series_start(self, position: int) -> int:
        """The position at which the series holding `position` starts."""
        return int(np.flatnonzero(self.starts[: position + 1])[-1])

    def at(self, position: int) -> torch.Tensor:
        """The members' starting noise at `position` of the times."""
        start = self.series_start(position)
        if self._position is None or not start <= self._position <= position:
            self._position, self._state = start, self.draw(self.times[start])
        while self._position < position:
            self._position += 1
            self._state = ar1_step(self._state, self.draw(self.times[self._position]), self.rho)
        return self._state


def series_latents(coherence: CoherenceSection, times, draw, channels: list[str]) -> SeriesLatents | None:
    """The `SeriesLatents` of a generation of `times` of the output `channels`; None when its members are
    independent. A rho per channel must name as many as there are channels (a ConfigError otherwise)."""
    if not coherence.coherent:
        return None
    rho = coherence.rho if not isinstance(coherence.rho, tuple) else coherence.rho_per_channel(channels)
    return SeriesLatents(rho, times, draw)


def output_coords(coherence: CoherenceSection, times, positions) -> dict:
    """The `series_start` coordinate of the output's times at `positions` (of all `times`); {} when independent."""
    if not coherence.coherent:
        return {}
    return ensemble_file.series_coords(ensemble_file.series_starts(times)[np.asarray(positions, dtype=int)])


def output_attrs(coherence: CoherenceSection) -> dict:
    """The global attributes naming the method and rho; {} when independent (files stay as they were)."""
    return ensemble_file.coherence_attrs(coherence.method, _plain_rho(coherence.rho)) if coherence.coherent else {}


def fingerprint_settings(coherence: CoherenceSection) -> dict | None:
    """What of the coherence enters an ensemble's fingerprint: None when independent (fingerprints as before)."""
    return {"method": coherence.method, "rho": _plain_rho(coherence.rho)} if coherence.coherent else None


def _plain_rho(rho) -> float | list[float]:
    return [float(v) for v in rho] if isinstance(rho, tuple) else float(rho)
