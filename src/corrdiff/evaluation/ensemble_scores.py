"""Per-channel scores of in-memory ensembles, kept per time: the point scores of `metrics` and the spectral ones
of `spectra`, as `corrdiff tune` (with bootstrap intervals over the times, `corrdiff.experiments.tuning_scores`) and the
sample check of diffusion training compute them.

    crps, crps_fair, mae, rmse, spread, spread_skill   `metrics.scores_from_sums` over the added times
    power_ratio   the members' mean power over the truth's in the smallest octave, wavelengths 2–4 grid spacings
    lsd           the log-spectral distance over all wavenumbers up to Nyquist (mean |log10| of that ratio)

Both spectral scores are of the power spectra summed over the times (`spectra.isotropic_power`); they are
ratios, so any grid spacing gives them.
"""

import numpy as np

from corrdiff.evaluation.metrics import field_sums, EXTREMES, scores_from_sums, SUMS
from corrdiff.evaluation.spectra import (isotropic_power, log_spectral_distance, smallest_octave_power_ratio,
                                         wavenumbers)

PER_CHANNEL = ("crps", "crps_fair", "mae", "rmse", "spread", "spread_skill", "power_ratio", "lsd")


class Scores:
    """One setting's per-time sums (time, channel, stat) and spectra (time, channel, wavenumber)."""

    def __init__(self, channels: int, members: int, shape: tuple[int, int]):
        self.channels = channels
        self.members = members
        self.wavenumber = wavenumbers(shape, 1.0)  # the octave is relative to Nyquist: any spacing gives the ratio
        self.sums: list[np.ndarray] = []  # (C, STATS + M + 1) per time
        self.power: list[np.ndarray] = []  # (C, K) per time: the members' mean power
        self.true_power: list[np.ndarray] = []  # (C, K) per time

    @classmethod
    def from_arrays(cls, members: int, wavenumber, sums, power, true_power) -> "Scores":
        """Scores from the arrays `arrays` gave (a resumed tune's row)."""
        scores = cls(np.shape(sums)[1], members, (2, 2))
        scores.wavenumber = np.asarray(wavenumber, dtype=np.float64)
        scores.sums = list(np.asarray(sums, dtype=np.float64))
        scores.power = list(np.asarray(power, dtype=np.float64))
        scores.true_power = list(np.asarray(true_power, dtype=np.float64))
        return scores

    def add(self, ensemble: np.ndarray, truth: np.ndarray, rng_key: int) -> None:
        """Add one time: ensemble (member, C, H, W) and truth (C, H, W), physical units."""
        self.sums.append(np.stack([field_sums(ensemble[:, c], truth[c], np.random.default_rng([rng_key, c]))
                                   for c in range(truth.shape[0])]))
        self.power.append(isotropic_power(ensemble, 1.0).mean(axis=0))
        self.true_power.append(isotropic_power(truth, 1.0))

    def arrays(self) -> dict[str, np.ndarray]:
        """sums (time, C, stat), power and true_power (time, C, wavenumber), wavenumber (cycles per grid spacing)."""
        return {"sums": np.stack(self.sums), "power": np.stack(self.power), "true_power": np.stack(self.true_power),
                "wavenumber": self.wavenumber}

    def result(self) -> dict[str, np.ndarray]:
        """(C,) arrays over all times: crps, crps_fair, mae, rmse, spread, spread_skill, power_ratio, lsd."""
        a = self.arrays()
        return per_channel(a["sums"].sum(0), a["power"].sum(0), a["true_power"].sum(0), self.members,
                           self.wavenumber)


def stat_names(members: int) -> list[str]:
    """The names of the stat axis of the sums: SUMS, EXTREMES, rank_0 … rank_M (as `forecast_sums` names them)."""
    return list(SUMS) + list(EXTREMES) + [f"rank_{r}" for r in range(members + 1)]


def per_channel(sums: np.ndarray, power: np.ndarray, true_power: np.ndarray, members: int,
                wavenumber: np.ndarray) -> dict[str, np.ndarray]:
    """PER_CHANNEL scores (..., C) from sums (..., C, stat) and spectra (..., C, K) summed over the times."""
    scores = scores_from_sums(sums, members)
    lead = power.shape[:-1]
    flat_power, flat_true = power.reshape(-1, power.shape[-1]), true_power.reshape(-1, power.shape[-1])
    # The spectra's summaries take one spectrum at a time; a bootstrap makes ~10⁵ calls, a few seconds.
    scores["power_ratio"] = np.array([smallest_octave_power_ratio(p, t, wavenumber, 1.0)
                                      for p, t in zip(flat_power, flat_true)]).reshape(lead)
    scores["lsd"] = np.array([log_spectral_distance(p, t, wavenumber, 1.0)
                              for p, t in zip(flat_power, flat_true)]).reshape(lead)
    return {k: np.asarray(scores[k], dtype=np.float64) for k in PER_CHANNEL}
