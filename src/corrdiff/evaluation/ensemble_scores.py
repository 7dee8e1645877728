"""Per-channel scores of in-memory ensembles accumulated over times: the point scores of `metrics` and the
spectral ones of `spectra`, as `corrdiff tune` and the sample check of diffusion training compute them.

    crps, crps_fair, mae, rmse, bias, spread, spread_skill   `metrics.scores_from_sums` over all added times
    power_ratio   the members' mean power over the truth's in the smallest octave, wavelengths 2–4 grid spacings
    lsd           the log-spectral distance over all wavenumbers up to Nyquist (mean |log10| of that ratio)

Both spectral scores are of the power spectra summed over the added times (`spectra.isotropic_power`); they are
ratios, so any grid spacing gives them.
"""

import numpy as np

from corrdiff.evaluation.metrics import field_sums, scores_from_sums, STATS
from corrdiff.evaluation.spectra import (isotropic_power, log_spectral_distance, smallest_octave_power_ratio,
                                         wavenumbers)

SPECTRAL = ("power_ratio", "lsd")


class Scores:
    """Per-channel sums over times of an ensemble's scores, and the power spectra of members and truth.

    `keys`: the scores `result` gives (default: every point and spectral score named in the module docstring).
    """

    def __init__(self, channels: int, members: int, shape: tuple[int, int], keys: tuple[str, ...] | None = None):
        self.members, self.keys = members, keys
        self.sums = np.zeros((channels, STATS + members + 1))
        self.wavenumber = wavenumbers(shape, 1.0)  # the octave is relative to Nyquist: any spacing gives the ratio
        self.power = np.zeros((channels, self.wavenumber.size))
        self.true_power = np.zeros_like(self.power)

    def add(self, ensemble: np.ndarray, truth: np.ndarray, rng_key: int) -> None:
        """Add one time: ensemble (member, C, H, W) and truth (C, H, W), in the same units (any)."""
        for c in range(truth.shape[0]):
            rng = np.random.default_rng([rng_key, c])
            self.sums[c] += field_sums(ensemble[:, c], truth[c], rng)
        self.power += isotropic_power(ensemble, 1.0).mean(axis=0)
        self.true_power += isotropic_power(truth, 1.0)

    def result(self) -> dict[str, np.ndarray]:
        """(C,) float64 arrays of the scores `keys` names."""
        scores = scores_from_sums(self.sums, self.members)
        scores["power_ratio"] = np.array([smallest_octave_power_ratio(p, t, self.wavenumber, 1.0)
                                          for p, t in zip(self.power, self.true_power)])
        scores["lsd"] = np.array([log_spectral_distance(p, t, self.wavenumber, 1.0)
                                  for p, t in zip(self.power, self.true_power)])
        return {k: np.asarray(scores[k], dtype=np.float64) for k in (self.keys or scores)}
