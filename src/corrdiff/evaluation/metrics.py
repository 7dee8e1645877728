"""Point scores of ensemble forecasts against truth: MAE, RMSE, bias, CRPS, spread–skill, rank histogram.

Each (model, variable) is reduced block by block over time (dask) to per-time sums over the valid pixels
(finite truth and members). The scores of one time and the scores over all times are ratios of these sums,
so the totals weigh every pixel of every time equally:

    MAE  = Σ|ē − y| / n                  (ē: ensemble mean, y: truth; the member itself for one member)
    RMSE = sqrt(Σ(ē − y)² / n)           bias = Σ(ē − y) / n
    CRPS = Σ crps(x_1..M, y) / n         (the CRPS of the empirical distribution of the members)
    fair CRPS = Σ fcrps(x_1..M, y) / n   (the unbiased estimator: E|X − y| − E|X − X'| / 2 over pairs of
                                          distinct members; Ferro 2014, Zamo & Naveau 2018)
    spread = sqrt(Σ s² / n)              (s²: ensemble variance with ddof=1)
    spread–skill = sqrt((M + 1) / M) · spread / RMSE    (≈ 1 for a calibrated ensemble of M members)

The usual CRPS of M members is lowest for a spread below the calibrated one (about 0.8 of it at M = 8),
so it rewards under-dispersion; the fair CRPS is the expected CRPS of the distribution the members are drawn
from, lowest at the calibrated spread whatever M. Every decision corrdiff makes (tune's recommendation,
calibration, the best checkpoint) uses the fair one; reports give both, labelled.

The rank histogram counts, over valid pixels, how many members lie below the truth (0..M); ties are split
at random with a generator seeded by (seed, time index), so results do not depend on the chunking.

Pixels where truth or any member is NaN/inf are left out of every score, and counted: `nan_forecast`
(non-finite forecast values), `nan_truth` (non-finite truth values) and `left_out` (pixel-times left out)
are in the scores, `nan_notes` turns them into notes, and a forecast or truth with no finite value at all
is an EvaluationError naming its file and the variable (`check_scorable`).
"""

import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr

from corrdiff.errors import EvaluationError
from corrdiff.evaluation.scores import FROM_SUMS, named, PER_VARIABLE, SCORES
from corrdiff.evaluation.stores import Evaluation

SUMS = ("count", "abs_error", "squared_error", "error", "crps", "variance", "nan_forecast", "nan_truth", "crps_fair")
EXTREMES = ("forecast_min", "forecast_max", "truth_min", "truth_max")  # ranges for the histograms, same pass
STATS = len(SUMS) + len(EXTREMES)  # then the rank counts 0..M
TITLE = "corrdiff scores"  # the title attribute of a scores file: how `corrdiff score` recognises its own


def crps_ensemble(obs: np.ndarray, ensemble: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """CRPS of the ensemble's empirical distribution at each point; obs (...), ensemble with members on
    `member_axis` (default: (member, ...)), same units; returns (...) in those units.

    Hand-written because it is several times faster than `scoringrules.crps_ensemble` on (member, y, x)
    fields (benchmarks/bench_scoring.py measures both); tests/evaluation checks that the two are equal.
    """
    return _crps_of_sorted_anomaly(sorted_anomaly(ensemble, obs, member_axis))


def sorted_anomaly(ensemble: np.ndarray, obs: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """Members minus truth, members moved to the last axis and sorted: (..., member), contiguous.

    Members last because numpy sorts contiguous short rows with SIMD networks (~6x faster than along axis
    0); x − y rather than x keeps float32 exact enough for fields far from zero (temperatures in K).
    """
    ensemble = np.moveaxis(np.asarray(ensemble), member_axis, -1)
    obs = np.asarray(obs, dtype=ensemble.dtype)
    anomaly = np.empty(np.broadcast_shapes(ensemble.shape, obs.shape + (1,)), dtype=ensemble.dtype)
    np.subtract(ensemble, obs[..., None], out=anomaly)
    anomaly.sort(axis=-1)
    return anomaly


def crps_fair(obs: np.ndarray, ensemble: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """Fair CRPS of the ensemble at each point (Ferro 2014): E|X − y| − ½E|X − X'| with the pair mean taken
    over the M(M − 1) pairs of distinct members; obs (...), ensemble with members on `member_axis`; (...).

    Its expectation is the CRPS of the distribution the members are drawn from, so unlike `crps_ensemble` it
    does not favour ensembles narrower than that distribution. Needs at least two members."""
    return _crps_of_sorted_anomaly(sorted_anomaly(ensemble, obs, member_axis), fair=True)


def _crps_of_sorted_anomaly(anomaly: np.ndarray, fair: bool = False) -> np.ndarray:
    """CRPS from sorted (..., member) anomalies: E|X − y| − ½E|X − X'|, with
    ½E|X − X'| = Σ_i (2i − M − 1) x_(i) / M² for members sorted x_(1) ≤ … ≤ x_(M), or with `fair`
    Σ_i (2i − M − 1) x_(i) / (M(M − 1)) (pairs of distinct members only).
    Sums over members as matrix-vector products: several times faster than numpy's reductions."""
    m = anomaly.shape[-1]
    pairs = m * (m - 1) if fair else m**2
    if pairs == 0:
        return np.full(anomaly.shape[:-1], np.nan, dtype=anomaly.dtype)
    weights = (2.0 * np.arange(1, m + 1) - m - 1).astype(anomaly.dtype) / pairs
    return np.abs(anomaly) @ np.full(m, 1.0 / m, dtype=anomaly.dtype) - anomaly @ weights


def crps_scoringrules(obs: np.ndarray, ensemble: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """The same CRPS from `scoringrules.crps_ensemble` (the reference; "qd" is its empirical-CDF estimator)."""
    import scoringrules

    return np.asarray(scoringrules.crps_ensemble(obs, ensemble, m_axis=member_axis, estimator="qd"))


def field_sums(ensemble: np.ndarray, obs: np.ndarray, rng: np.random.Generator, crps: str = "sorted") -> np.ndarray:
    """Sums over the valid pixels of one time: SUMS, EXTREMES (over all finite values), rank counts 0..M.

    ensemble (member, y, x) and obs (y, x) in the variable's units; `crps` "sorted" (ours) or
    "scoringrules" (the reference, slower); returns float64 (STATS + M + 1,).
    """
    m = ensemble.shape[0]
    anomaly = sorted_anomaly(ensemble, obs)  # (y, x, member)
    ones = np.ones(m, dtype=anomaly.dtype)
    error = anomaly @ (ones / m)  # ensemble mean minus truth
    if crps == "sorted":
        crps_map = _crps_of_sorted_anomaly(anomaly)
    elif crps == "scoringrules":
        crps_map = crps_scoringrules(obs, ensemble)
    else:
        raise ValueError(f"crps must be 'sorted' or 'scoringrules', not {crps!r}")
    valid = np.isfinite(error) & np.isfinite(crps_map)  # NaN truth or member: pixel left out
    pick = (lambda a: a) if bool(valid.all()) else (lambda a: a[valid])
    error_v = pick(error).astype(np.float64)
    variance = crps_fair_sum = np.nan
    if m > 1:
        crps_fair_sum = pick(_crps_of_sorted_anomaly(anomaly, fair=True)).sum(dtype=np.float64)
        centred = anomaly - error[..., None]
        variance = pick(np.einsum("...m,...m->...", centred, centred) / (m - 1)).sum(dtype=np.float64)
    rank = pick(((anomaly < 0) @ ones).astype(np.int64))  # members below the truth
    if np.count_nonzero(anomaly == 0):  # ties with the truth (e.g. zero rain): uniform among the tied ranks
        ties = pick(((anomaly == 0) @ ones).astype(np.int64))
        rank = rank + rng.integers(0, ties + 1)
    sums = [error_v.size, np.abs(error_v).sum(), (error_v**2).sum(), error_v.sum(),
            pick(crps_map).sum(dtype=np.float64), variance,
            ensemble.size - np.count_nonzero(np.isfinite(ensemble)), obs.size - np.count_nonzero(np.isfinite(obs)),
            crps_fair_sum]
    extremes = [np.fmin.reduce(ensemble, axis=None), np.fmax.reduce(ensemble, axis=None),
                np.fmin.reduce(obs, axis=None), np.fmax.reduce(obs, axis=None)]  # fmin/fmax: NaN ignored
    return np.concatenate([np.asarray(sums + extremes, dtype=np.float64),
                           np.bincount(rank.ravel(), minlength=m + 1).astype(np.float64)])


def _block_sums(ensemble, obs, time_index, seed, crps):
    """field_sums for each time of a block: ensemble (t, member, y, x), obs (t, y, x) → (t, stat)."""
    with np.errstate(invalid="ignore"):  # inf − inf at non-finite pixels: they are counted and left out
        rows = [field_sums(ensemble[i], obs[i], np.random.default_rng([seed, int(time_index[i])]), crps)
                for i in range(ensemble.shape[0])]
    return np.stack(rows) if rows else np.zeros((0, STATS + ensemble.shape[1] + 1))


def forecast_sums(forecast: xr.DataArray, truth: xr.DataArray, seed: int = 0, crps: str = "sorted") -> xr.DataArray:
    """Lazy per-time sums (time, stat) of a forecast (time, member, y, x) against truth (time, y, x)."""
    forecast = forecast.transpose("time", "member", "y", "x")
    ens = forecast.data if isinstance(forecast.data, da.Array) else da.from_array(forecast.data, chunks=(1, -1, -1, -1))
    ens = ens.rechunk({1: -1, 2: -1, 3: -1})
    obs = da.asarray(truth.transpose("time", "y", "x").data).rechunk((ens.chunks[0], -1, -1))
    index = da.arange(ens.shape[0], chunks=(ens.chunks[0],))
    members = ens.shape[1]
    sums = da.blockwise(_block_sums, "ts", ens, "tmyx", obs, "tyx", index, "t",
                        new_axes={"s": STATS + members + 1}, concatenate=True, dtype=np.float64,
                        seed=seed, crps=crps)
    stat = list(SUMS) + list(EXTREMES) + [f"rank_{r}" for r in range(members + 1)]
    return xr.DataArray(sums, dims=("time", "stat"), coords={"time": forecast["time"].values, "stat": stat})


def scores_from_sums(sums: np.ndarray, members: int) -> dict[str, np.ndarray]:
    """The scores FROM_SUMS of `corrdiff.evaluation.scores.SCORES` from sums (..., stat); sum over time first for
    the scores over all times."""
    s = {name: sums[..., i] for i, name in enumerate(SUMS)}
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(s["count"] > 0, s["count"], np.nan)
        rmse = np.sqrt(s["squared_error"] / n)
        spread = np.sqrt(s["variance"] / n)
        return {"mae": s["abs_error"] / n, "rmse": rmse, "bias": s["error"] / n, "crps": s["crps"] / n,
                "crps_fair": s["crps_fair"] / n, "spread": spread, "spread_skill": np.sqrt((members + 1) / members) * spread / rmse}


def score_models(evaluation: Evaluation, seed: int = 0, crps: str = "sorted") -> xr.Dataset:
    """Tidy scores of every model and variable: totals (model, variable), per time (model, variable, time),
    rank histograms (model, variable, rank), value ranges; computed in one dask pass over the data."""
    models, variables = list(evaluation.models), evaluation.variables
    keys = [(m, v) for m in models for v in variables if v in evaluation.models[m]]
    lazy = [forecast_sums(evaluation.models[m][v], evaluation.truth[v], seed, crps) for m, v in keys]
    computed = dict(zip(keys, dask.compute(*[s.data for s in lazy])))
    members = {m: evaluation.members(m) for m in models}
    shape = (len(models), len(variables))
    out = {k: np.full(shape, np.nan) for k in named(FROM_SUMS)}
    out |= {f"{k}_by_time": np.full(shape + (evaluation.truth.sizes["time"],), np.nan) for k in named(FROM_SUMS)}
    out |= {k: np.full(shape, np.nan) for k in EXTREMES}
    out["rank_histogram"] = np.full(shape + (max(members.values()) + 1,), np.nan)
    out["count"] = np.zeros(shape, dtype=np.int64)
    out |= {k: np.zeros(shape, dtype=np.int64) for k in ("nan_forecast", "left_out")}
    pixels = evaluation.pixels
    for (m, v), sums in computed.items():
        i, j = models.index(m), variables.index(v)
        for k, value in scores_from_sums(sums.sum(axis=0), members[m]).items():
            out[k][i, j] = value
        for k, value in scores_from_sums(sums, members[m]).items():
            out[f"{k}_by_time"][i, j] = value
        for n, k in enumerate(EXTREMES):
            column = sums[:, len(SUMS) + n]
            out[k][i, j] = np.fmin.reduce(column) if k.endswith("min") else np.fmax.reduce(column)
        out["rank_histogram"][i, j, : members[m] + 1] = sums[:, STATS:].sum(axis=0)
        out["count"][i, j] = sums[:, 0].sum()
        out["left_out"][i, j] = pixels - out["count"][i, j]
        out["nan_forecast"][i, j] = sums[:, SUMS.index("nan_forecast")].sum()
    scores = _scores_dataset(evaluation, models, members, out, computed)
    check_scorable(scores, evaluation)
    return scores


def check_scorable(scores: xr.Dataset, evaluation: Evaluation) -> None:
    """An EvaluationError naming the file and variable when truth or a forecast has no finite value at all,
    or when no pixel has both (nothing could be scored)."""
    pixels = evaluation.pixels
    times = evaluation.truth.sizes["time"]
    for v in evaluation.variables:
        if int(scores["nan_truth"].sel(variable=v)) >= pixels:
            raise EvaluationError(f"{evaluation.source('truth')}: truth {v!r} is NaN/inf at every pixel of the "
                                  f"{times} scored time(s); nothing can be scored against it")
        for m in evaluation.models:
            if v not in evaluation.models[m] or int(scores["count"].sel(model=m, variable=v)) > 0:
                continue
            values = pixels * evaluation.members(m)
            nan = int(scores["nan_forecast"].sel(model=m, variable=v))
            what = f"is NaN/inf everywhere ({nan} values over {times} time(s))" if nan >= values else \
                "has no pixel where it and truth are both finite"
            raise EvaluationError(f"{evaluation.source(m)}: the {m} forecast of {v!r} {what}; nothing to score")


def nan_notes(scores: xr.Dataset) -> list[str]:
    """One note per truth variable and per (model, variable) with non-finite values: how many, and how many
    pixel-times were left out because of them."""
    notes = []
    pixels = int(scores.attrs.get("pixels_per_model", 0))
    for v in scores["variable"].values:
        bad = int(scores["nan_truth"].sel(variable=v))
        if bad:
            notes.append(f"truth {v}: {bad} of {pixels} values NaN/inf, left out of every model's scores")
        for m in scores["model"].values:
            nan, left = (int(scores[k].sel(model=m, variable=v)) for k in ("nan_forecast", "left_out"))
            if nan:
                members = int(scores["members"].sel(model=m))
                notes.append(f"{m} {v}: {nan} of {pixels * members} forecast values NaN/inf; "
                             f"{left} of {pixels} pixel-times left out")
    return notes


def _scores_dataset(evaluation, models, members, out, computed) -> xr.Dataset:
    variables = evaluation.variables
    units = [str(evaluation.truth[v].attrs.get("units", evaluation.predictions[v].attrs.get("units", "")))
             for v in variables]
    data = {}
    for k in named(FROM_SUMS):
        data[k] = (("model", "variable"), out[k], SCORES[k].attrs(", over all times"))
        data[f"{k}_by_time"] = (("model", "variable", "time"), out[f"{k}_by_time"], SCORES[k].attrs(", per time"))
    data["rank_histogram"] = (("model", "variable", "rank"), out["rank_histogram"],
                              {"long_name": "count of valid pixels where `rank` members lie below the truth",
                               "comment": "NaN for ranks above the model's member count"})
    data["count"] = (("model", "variable"), out["count"], {"long_name": "valid pixels scored, all times"})
    data["left_out"] = (("model", "variable"), out["left_out"],
                        {"long_name": "pixel-times left out because truth or a member is NaN/inf"})
    data["nan_forecast"] = (("model", "variable"), out["nan_forecast"],
                            {"long_name": "NaN/inf forecast values (members x pixels), all times"})
    nan_truth = np.zeros(len(variables), dtype=np.int64)
    for (m, v), sums in computed.items():  # every model sees the same truth: take it from any
        nan_truth[variables.index(v)] = sums[:, SUMS.index("nan_truth")].sum()
    data["nan_truth"] = (("variable",), nan_truth, {"long_name": "NaN/inf truth values, all times"})
    data["members"] = (("model",), np.array([members[m] for m in models]), {"long_name": "ensemble members"})
    for k in ("forecast_min", "forecast_max"):
        data[k] = (("model", "variable"), out[k], {"long_name": f"{k.split('_')[1]}imum forecast value, all times",
                                                   "units": PER_VARIABLE})
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a variable no model has
        data["truth_min"] = (("variable",), np.nanmin(out["truth_min"], axis=0),
                             {"long_name": "minimum true value, all times", "units": PER_VARIABLE})
        data["truth_max"] = (("variable",), np.nanmax(out["truth_max"], axis=0),
                             {"long_name": "maximum true value, all times", "units": PER_VARIABLE})
    coords = {"model": models, "variable": variables, "units": ("variable", units),
              "time": evaluation.truth["time"].values, "rank": np.arange(out["rank_histogram"].shape[-1])}
    pixels = evaluation.pixels
    attrs = {"title": TITLE, "Conventions": "CF-1.10", "grid_spacing_km": evaluation.spacing_km,
             "pixels_per_model": pixels,
             "comment": "scores over all times pool every valid pixel of every time (see corrdiff.evaluation.metrics)"}
    return xr.Dataset(data, coords, attrs)
