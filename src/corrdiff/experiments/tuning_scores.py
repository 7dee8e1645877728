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

from corrdiff.evaluation.ensemble_scores import per_channel, PER_CHANNEL, Scores, stat_names  # noqa: F401

COMBINED = ("crps_norm", "crps_fair_norm", "mae_norm", "spread_skill_mean", "power_ratio_mean", "lsd_mean")
RESAMPLES = 1000
LEVEL = 0.9  # central 90% of the resampled scores: percentiles 5 and 95
SEED = 0


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

