"""How `corrdiff tune` picks its recommendation from the measured grid (`choose`) and calibrates it (`calibrate`):
the rule of docs/sampling.md, on the table `corrdiff.experiments.tuning` builds."""

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from corrdiff.errors import ConfigError
from corrdiff.experiments.tuning_scores import PER_CHANNEL, Scores

SCALES = np.round(np.arange(0.5, 3.0001, 0.05), 2)  # calibration factors tried
LSD_TOLERANCE = 0.05  # texture rule of `choose`, in log10 units (docs/sampling.md says why)


@dataclass(frozen=True)
class RecommendationRule:
    """How the recommended setting is chosen from the measured grid (`choose`), and whether it is calibrated."""

    tolerance: float = 0.01
    """Fraction of the best fair CRPS within which a setting counts as skilful."""
    lsd_tolerance: float | None = LSD_TOLERANCE
    """log10 units above the lowest log-spectral distance of the skilful settings; None or inf: no texture rule."""
    calibration: bool = True
    """Fit a per-channel residual factor to the recommended setting (`calibrate`)."""



def choose(table: xr.Dataset, tolerance: float, lsd_tolerance: float | None = LSD_TOLERANCE) -> int:
    """The index of the cheapest setting (fewest evaluations, then lowest fair CRPS/std) among the skilful ones
    whose `lsd_mean` is within `lsd_tolerance` of the lowest among the skilful ones.

    Skilful: a `crps_fair_norm` within `tolerance` of the best (lowest) one, or indistinguishable from it, i.e.
    the bootstrap interval of its paired difference to the best (`crps_fair_norm_diff_low/high`, when the table
    has them) contains 0. Settings the scored times cannot tell apart are not called different: the cheapest of
    them is taken. The texture rule is skipped when `lsd_tolerance` is None or infinite, or the table has no
    `lsd_mean`.
    """
    fair = table["crps_fair_norm"].values
    if not np.isfinite(fair).any():
        raise ConfigError("tune: no setting gave a finite fair CRPS")
    ok = fair <= np.nanmin(fair) * (1 + tolerance)
    if "crps_fair_norm_diff_low" in table:
        ok |= (table["crps_fair_norm_diff_low"].values <= 0) & (table["crps_fair_norm_diff_high"].values >= 0)
    if lsd_tolerance is not None and np.isfinite(lsd_tolerance) and "lsd_mean" in table:
        lsd = table["lsd_mean"].values
        if np.isfinite(lsd[ok]).any():
            ok &= lsd <= np.nanmin(lsd[ok]) + lsd_tolerance
    return int(min(np.flatnonzero(ok), key=lambda i: (int(table["network_evaluations"][i]), fair[i])))


def calibrate(kept: list, truth: np.ndarray, stats, scales=SCALES) -> xr.Dataset:
    """Per-channel residual factors s (member = μ + s·r) and the scores before and after, as a Dataset.

    Each channel's s is the one with the lowest fair CRPS: on the grid `scales`, then refined by the vertex of
    the parabola through the grid's lowest point and its two neighbours, kept when its fair CRPS is no higher.
    The fair CRPS is lowest where the members' spread matches the error's (spread/skill 1), so s calibrates
    the ensemble; the usual CRPS is lowest below that spread and would keep it under-dispersed.

    `kept` holds the normalised (mean (1, C, H, W), ensemble (member, C, H, W)) of each time of `truth`
    (time, C, H, W), physical units; `stats` (a Normalization) denormalises the scaled members.
    """
    channels = truth.shape[1]
    scales = np.asarray(scales, dtype=np.float64)
    curves = {k: np.zeros((len(scales), channels)) for k in PER_CHANNEL}
    for i, scale in enumerate(scales):
        for k, v in _scaled_scores(kept, truth, stats, np.full(channels, scale)).items():
            curves[k][i] = v
    lowest = np.nanargmin(curves["crps_fair"], axis=0)
    chosen = scales[lowest]
    refined = np.round([_vertex(scales, curves["crps_fair"][:, c], i) for c, i in enumerate(lowest)], 3)
    after = {k: v[lowest, np.arange(channels)] for k, v in curves.items()}
    if not np.allclose(refined, chosen):
        at_refined = _scaled_scores(kept, truth, stats, refined)
        better = at_refined["crps_fair"] <= after["crps_fair"]
        chosen = np.where(better, refined, chosen)
        after = {k: np.where(better, at_refined[k], after[k]) for k in PER_CHANNEL}
    one = int(np.argmin(np.abs(scales - 1.0)))
    data = {"residual_scale": (("channel",), chosen)}
    for k in PER_CHANNEL:
        data[f"calibration_{k}"] = (("scale", "channel"), curves[k])
        data[f"{k}_before"] = (("channel",), curves[k][one])
        data[f"{k}_after"] = (("channel",), after[k])
    return xr.Dataset(data, coords={"scale": scales})


def _scaled_scores(kept: list, truth: np.ndarray, stats, scale: np.ndarray) -> dict[str, np.ndarray]:
    """(C,) scores over all times of the kept members with their residual times `scale` (C,)."""
    scores = Scores(truth.shape[1], kept[0][1].shape[0], truth.shape[2:])
    factor = torch.as_tensor(scale, dtype=kept[0][1].dtype).reshape(1, -1, 1, 1)
    for t, (mean, ensemble) in enumerate(kept):
        scores.add(stats.denormalize_target(mean + factor * (ensemble - mean)).numpy(), truth[t], t)
    return scores.result()


def _vertex(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """The abscissa of the lowest point of the parabola through points i − 1, i, i + 1 (x[i] at an end of the
    grid or when the three do not bend upwards)."""
    if i == 0 or i == len(x) - 1 or not np.isfinite(y[i - 1:i + 2]).all():
        return float(x[i])
    (a, b, _) = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    return float(np.clip(-b / (2 * a), x[i - 1], x[i + 1])) if a > 0 else float(x[i])
