"""What `corrdiff tune` keeps of each time it scores, the scores made from it, and their bootstrap intervals.

Per setting, time and channel tune keeps the sums of `corrdiff.evaluation.metrics.field_sums` and the members'
and the truth's isotropic power spectra. A score over all times is a ratio of sums over times
(`scores_from_sums`, or a ratio of summed spectra), so the scores of any multiset of times follow from these
per-time arrays without generating anything again.

Uncertainty is a bootstrap over times: `RESAMPLES` resamples of the T scored times, drawn with replacement
(seeded), each scored like the whole; the interval is the central `LEVEL` (90%) of the resampled scores
(percentiles 5 and 95). Every setting is scored on the same resampled times, so the difference of two settings
is bootstrapped paired: `crps_fair_norm_diff_low/high` bound the fair CRPS/std of a setting minus the best
setting's (the lowest fair CRPS/std on all times). The truth's standard deviation that normalises CRPS and MAE
is that of all scored times, not resampled. With one time every interval is a single value.
"""

import warnings

import numpy as np

from corrdiff.evaluation.metrics import field_sums, EXTREMES, scores_from_sums, SUMS
from corrdiff.evaluation.spectra import (isotropic_power, log_spectral_distance, smallest_octave_power_ratio,
                                         wavenumbers)

PER_CHANNEL = ("crps", "crps_fair", "mae", "rmse", "spread", "spread_skill", "power_ratio", "lsd")
COMBINED = ("crps_norm", "crps_fair_norm", "mae_norm", "spread_skill_mean", "power_ratio_mean", "lsd_mean")
RESAMPLES = 1000
LEVEL = 0.9  # central 90% of the resampled scores: percentiles 5 and 95
SEED = 0


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


def combined(scores: dict[str, np.ndarray], truth_std: np.ndarray) -> dict[str, np.ndarray]:
    """COMBINED scores (...) from per-channel ones (..., C): CRPS, fair CRPS and MAE over the truth's standard
    deviation (C,), then the mean over channels; spread/skill, power ratio and LSD: the mean over channels."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"crps_norm": (scores["crps"] / truth_std).mean(axis=-1),
                "crps_fair_norm": (scores["crps_fair"] / truth_std).mean(axis=-1),
                "mae_norm": (scores["mae"] / truth_std).mean(axis=-1),
                "spread_skill_mean": scores["spread_skill"].mean(axis=-1),
                "power_ratio_mean": scores["power_ratio"].mean(axis=-1),
                "lsd_mean": scores["lsd"].mean(axis=-1)}


def resample_counts(times: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resample, time): how often each time is drawn in each bootstrap resample of `times` times."""
    return np.random.default_rng(seed).multinomial(times, np.full(times, 1.0 / times), size=resamples)


def bootstrap(sums: np.ndarray, power: np.ndarray, true_power: np.ndarray, members: int, wavenumber: np.ndarray,
              truth_std: np.ndarray, best: int, resamples: int = RESAMPLES, seed: int = SEED,
              level: float = LEVEL) -> dict[str, np.ndarray]:
    """Bootstrap intervals (setting,) of the COMBINED scores, `<name>_low` and `<name>_high`, and of the paired
    difference of fair CRPS/std to setting `best`, `crps_fair_norm_diff_low/high` (see the module docstring).

    sums (setting, time, C, stat); power (setting, time, C, K); true_power (time, C, K)."""
    counts = resample_counts(sums.shape[1], resamples, seed).astype(np.float64)
    true_power = np.einsum("bt,tck->bck", counts, true_power)[:, None]  # the same truth for every setting
    resampled = per_channel(np.einsum("bt,ntcs->bncs", counts, sums), np.einsum("bt,ntck->bnck", counts, power),
                            np.broadcast_to(true_power, counts.shape[:1] + power.shape[:1] + power.shape[2:]),
                            members, wavenumber)
    scores = combined(resampled, truth_std)  # (resample, setting) each
    scores["crps_fair_norm_diff"] = scores["crps_fair_norm"] - scores["crps_fair_norm"][:, best:best + 1]
    tails = 100 * (1 - level) / 2
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a setting with no finite score: NaN interval
        for name, values in scores.items():
            out[f"{name}_low"], out[f"{name}_high"] = np.nanpercentile(values, [tails, 100 - tails], axis=0)
    return out

