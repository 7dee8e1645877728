"""Scores of time: what a forecast does from one time to the next, each member's own series against truth's.

Every other score takes the times one by one; a member that flickers from time to time scores as well there as
one that evolves as the weather does. These scores look at consecutive times.

**Series.** Pairs of times are taken only within a series: consecutive scored times at one constant step (the
most common step between consecutive scored times, the smaller one on a tie). Any other step (a gap), or a change
of `forecast_reference_time` (an ensemble downscaled from forecasts), ends a series; a pair (t, t + k) is two
times k steps apart in one series, never across a gap. Without a single pair (fewer than 2 consecutive times) there are
no time scores at all: `score_in_time` gives None and the scores file holds none of them (`why_absent` says why).

**Residual.** The autocorrelations are of the residual r = x − μ, μ the regression mean (the model "regression":
the ensemble file's `<name>_regression`), the part the diffusion model generates; truth's residual is truth − μ.
For a variable without a regression mean, r is the anomaly about each point's mean over the scored times (of the
source itself, each member its own). The scores file's attribute `time_residual` says which.

**Scores** (model, variable), and truth's own `truth_<name>` (variable,) where `SCORES` says `of_truth`:

    residual_autocorrelation_lag{k}  Pearson correlation of r(t) and r(t + k) over every point and pair of
                                     times k steps apart, of each member's own series, then the mean over
                                     members; k = 1, 2, 3 (a lag without a pair is left out)
    ramp_std                         standard deviation of the ramps x(t + 1) − x(t) at every point and pair,
                                     members pooled, in the variable's units per step
    ramp_wasserstein                 Wasserstein-1 distance between the ramps' distributions (members pooled),
                                     from histograms of RAMP_BINS bins over ± the variable's range
    ramp_log_spectral_distance       `spectra.log_spectral_distance` between the mean isotropic spectra
                                     (`spectra.isotropic_power`, Hann window) of the ramps, the members'
                                     averaged, over up to `max_pairs` pairs evenly spaced

The autocorrelations, ramp σ and the ramps' histograms use every pair, in one pass over the data, block by block of
each source's time chunks (a block reads the 3 times after it too). The last two are distributions: skipped with
`distributions=False`, as `corrdiff score --spectra none` skips spectra and histograms.

Also here: `track_smoothness` (a vortex track's step and second difference, for `case_study.vortex_case`) and
`point_series` with `report_section` (the report's figure of the series at three points).
"""

from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from corrdiff import ensemble_file
from corrdiff.evaluation import cases, plots
from corrdiff.evaluation.lead_time import REFERENCE
from corrdiff.evaluation.scores import FROM_SERIES, named, SCORES
from corrdiff.evaluation.spectra import (isotropic_power, log_spectral_distance, radial_bins, ranges_of,
                                         sample_times, value_ranges, wasserstein_from_histograms)
from corrdiff.evaluation.stores import Evaluation

LAGS = (1, 2, 3)
RAMP_BINS = 20_000  # over ± the variable's range: W1 within one bin width, a ten-thousandth of the range
POINTS = ((0.5, 0.5), (0.25, 0.25), (0.75, 0.75))  # (y, x) fractions of the grid: its centre and two others
HOUR = np.timedelta64(3600, "s")
REGRESSION = "field minus the regression mean"
ANOMALY = "anomaly about each point's mean over the scored times (no regression mean)"


def autocorrelation_name(lag: int) -> str:
    """The scores' name of the lag-`lag` autocorrelation of the residual."""
    return f"residual_autocorrelation_lag{lag}"


@dataclass(frozen=True)
class Series:
    """Which times form series of consecutive times at one step."""

    index: np.ndarray
    """(time,): the number of each time's series, rising with time; a gap starts a new one."""
    step: np.timedelta64 | None
    """The step between consecutive times of a series; None for a single time."""

    def pairs(self, lag: int) -> np.ndarray:
        """The indices i of the pairs of times (i, i + lag) in one series."""
        first = np.arange(max(self.index.size - lag, 0))
        return first[self.index[first] == self.index[first + lag]]

    @property
    def counted(self) -> int:
        """The number of series of 2 or more times (those that give pairs)."""
        return int(np.sum(np.unique(self.index, return_counts=True)[1] >= 2))

    def describe(self) -> str:
        """E.g. "2 series of consecutive times 6 h apart, 38 pairs"."""
        pairs = self.pairs(1).size
        return (f"{self.counted} series of consecutive times {step_text(self.step)} apart, {pairs} pair"
                f"{'s' if pairs != 1 else ''}")


def step_text(step: np.timedelta64 | None) -> str:
    """A time step in hours ("6 h", "0.25 h"), or "none"."""
    return "none" if step is None else f"{step / HOUR:g} h"


def series_of(times, reference=None) -> Series:
    """The series of `times` (time,), sorted: runs of consecutive times at the most common step between
    consecutive times (the smaller one on a tie); `reference` (time,): a change of it ends a series too."""
    return series_from_starts(times, ensemble_file.series_starts(times, reference))


def series_from_starts(times, starts) -> Series:
    """The `Series` whose series begin where `starts` (time,) is true."""
    return Series(np.cumsum(starts) - 1, ensemble_file.series_step(times))


def series_of_evaluation(evaluation: Evaluation) -> Series:
    """The series of the scored times; a forecast ensemble's `forecast_reference_time` ends them too, and so does
    a series start the generation recorded (`series_start`, members that are time series)."""
    predictions = evaluation.predictions
    times = evaluation.truth["time"].values
    reference = None
    if REFERENCE in predictions.coords and predictions[REFERENCE].dims == ("time",):
        reference = predictions[REFERENCE].values
    starts = ensemble_file.series_starts(times, reference)
    if ensemble_file.SERIES_START in predictions.coords or ensemble_file.SERIES_START in predictions:
        recorded = predictions[ensemble_file.SERIES_START]
        if recorded.dims == ("time",):
            starts |= recorded.reindex(time=times, fill_value=1).values.astype(bool)
    return series_from_starts(times, starts)


def why_absent(times: int) -> str:
    """The one line `corrdiff score` logs when there are no time scores."""
    return (f"no time scores (autocorrelation, ramps): they need 2 or more consecutive scored times in one series, "
            f"and the {times} scored time{'s have' if times != 1 else ' has'} none")


# ---- sums over one block of times ------------------------------------------------------------------------------

def pair_sums(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(member, 6): count, Σa, Σb, Σa², Σb², Σab over points and pairs where both are finite; a, b (pair,
    member, y, x), a at the first time of each pair, b at the second. Products in a's precision, sums in
    float64."""
    valid = np.isfinite(a) & np.isfinite(b)
    if not valid.all():
        a, b = np.where(valid, a, 0), np.where(valid, b, 0)
    axes = (0, 2, 3)
    return np.stack([valid.sum(axes).astype(np.float64)] +
                    [p.sum(axes, dtype=np.float64) for p in (a, b, a * a, b * b, a * b)], axis=-1)


def correlation(sums: np.ndarray) -> np.ndarray:
    """Pearson correlations (...) from `pair_sums` (..., 6); NaN where either side does not vary."""
    n, sa, sb, saa, sbb, sab = np.moveaxis(np.asarray(sums, np.float64), -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(n > 0, n, np.nan)
        covariance = sab / n - sa * sb / n**2
        variance_a, variance_b = saa / n - (sa / n) ** 2, sbb / n - (sb / n) ** 2
        return covariance / np.sqrt(variance_a * variance_b)


def block_sums(fields: np.ndarray, reference: np.ndarray | None, mean: np.ndarray | None,
               pairs: dict[int, np.ndarray], spectrum_pairs: np.ndarray, ramp_range: tuple[float, float] | None,
               bins: int, spacing_km: float) -> dict:
    """The sums of one block of times of one source: `fields` (time, member, y, x) in physical units, the
    residual's reference: the regression mean `reference` (time, y, x), else each point's `mean` (member, y, x).
    `pairs` {lag: first index of each pair within the block}; `spectrum_pairs` those lag-1 pairs whose ramp
    spectra count; `ramp_range`: the histogram's range (None: no histogram, no spectrum).

    Gives {lag: `pair_sums` (member, 6) of the residual}, "ramp": (count, Σd, Σd²) of the ramps d, and with a
    range "histogram" (bins,) of d and "power" (member, wavenumber): the ramp spectra summed over the pairs."""
    fields = np.asarray(fields)
    base = reference[:, None] if reference is not None else mean[None].astype(fields.dtype)
    residual = fields - base
    out = {lag: pair_sums(residual[first], residual[first + lag]) for lag, first in pairs.items()}
    first = pairs[1]
    ramps = fields[first + 1] - fields[first]
    finite = ramps[np.isfinite(ramps)]
    out["ramp"] = np.array([finite.size, finite.sum(dtype=np.float64), np.square(finite, dtype=np.float64).sum()])
    if ramp_range is not None:
        out["histogram"] = np.histogram(finite, bins=bins, range=ramp_range)[0].astype(np.float64)
        sampled = ramps[np.isin(first, spectrum_pairs)]
        out["power"] = isotropic_power(sampled, spacing_km).sum(axis=0)
    return out


def _source_blocks(fields: xr.DataArray, reference: xr.DataArray | None, mean, series: Series,
                   spectrum_pairs: np.ndarray, ramp_range, bins: int, spacing_km: float) -> list:
    """Lazy `block_sums` of one source (time, member, y, x), one per chunk of its times with pairs."""
    data = fields.transpose("time", "member", "y", "x").data
    ref = None if reference is None else reference.transpose("time", "y", "x").data
    count = data.shape[0]
    chunks = data.chunks[0] if isinstance(data, da.Array) else (count,)
    bounds = np.cumsum((0,) + tuple(chunks))
    firsts = {lag: first for lag in LAGS if (first := series.pairs(lag)).size}
    blocks = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        pairs = {lag: first[(first >= start) & (first < stop)] - start for lag, first in firsts.items()}
        if not pairs[1].size:  # a pair at any lag has its lag-1 pairs in the same block
            continue
        end = min(stop + max(LAGS), count)
        sampled = spectrum_pairs[(spectrum_pairs >= start) & (spectrum_pairs < stop)] - start
        blocks.append(dask.delayed(block_sums, pure=False)(
            data[start:end], None if ref is None else ref[start:end], mean, pairs, sampled, ramp_range, bins,
            spacing_km))
    return blocks


def _total(blocks: list[dict]) -> dict:
    """The sums of a source's blocks, key by key."""
    total = {}
    for block in blocks:
        for key, value in block.items():
            total[key] = total[key] + value if key in total else value
    return total


# ---- the scores ------------------------------------------------------------------------------------------------

def score_in_time(evaluation: Evaluation, scores: xr.Dataset | None = None, max_pairs: int = 16,
                  distributions: bool = True, bins: int = RAMP_BINS) -> xr.Dataset | None:
    """The time scores (model, variable) of every model and truth's own (variable,), as the module docstring
    says; None when no two scored times are consecutive. `scores` (`metrics.score_models`, same evaluation):
    its value ranges set the ramp histograms' range (without it a pass finds them); `max_pairs`: pairs whose
    ramp spectra are averaged (0: all); `distributions`: the ramps' W1 and LSD too."""
    series = series_of_evaluation(evaluation)
    if not series.pairs(1).size:
        return None
    variables, spacing = evaluation.variables, evaluation.spacing_km
    sampled = sample_times(series.pairs(1), max_pairs) if distributions else np.zeros(0, np.int64)
    edges = dict.fromkeys(variables)
    if distributions:
        ranges = ranges_of(scores) if scores is not None else \
            value_ranges({"truth": evaluation.truth, **evaluation.models}, variables)
        edges = {v: ramp_edges(*ranges[v], bins) for v in variables}
    references = {v: _regression_of(evaluation, v) for v in variables}
    means = _anomaly_means(evaluation, [v for v in variables if references[v] is None])
    lazy = {}
    for v in variables:
        ramp_range = None if edges[v] is None else (float(edges[v][0]), float(edges[v][-1]))
        for name, fields in _sources(evaluation, v).items():
            lazy[name, v] = _source_blocks(fields, references[v], means.get((name, v)), series, sampled, ramp_range,
                                           bins, spacing)
    (computed,) = dask.compute(lazy)
    totals = {key: _total(blocks) for key, blocks in computed.items()}
    residual = {v: REGRESSION if references[v] is not None else ANOMALY for v in variables}
    return _dataset(evaluation, totals, series, residual, edges, sampled.size if distributions else None)


def ramp_edges(low: float, high: float, bins: int = RAMP_BINS) -> np.ndarray:
    """The ramps' histogram edges of a variable whose values lie in [low, high]: `bins` bins over ±(high − low),
    every possible ramp (−1…1 for a constant field)."""
    span = high - low if high > low else 1.0
    return np.linspace(-span, span, bins + 1)


def _regression_of(evaluation: Evaluation, variable: str) -> xr.DataArray | None:
    """The regression mean of `variable` (time, y, x), or None."""
    regression = evaluation.models.get("regression")
    if regression is None or variable not in regression:
        return None
    return regression[variable].isel(member=0)


def _sources(evaluation: Evaluation, variable: str) -> dict[tuple[str, str], xr.DataArray]:
    """{("truth", "") or ("model", name): (time, member, y, x)} of every source that has `variable`."""
    sources = {("truth", ""): evaluation.truth[variable].expand_dims(member=[0], axis=1)}
    sources |= {("model", m): ds[variable] for m, ds in evaluation.models.items() if variable in ds}
    return sources


def _anomaly_means(evaluation: Evaluation, variables: list[str]) -> dict:
    """{(source, variable): each point's mean over the scored times (member, y, x)} for `variables`, computed in
    a pass of its own: in the blocks' pass it would keep every time of a source in memory until its mean is done."""
    lazy = {}
    for v in variables:
        for name, fields in _sources(evaluation, v).items():
            data = fields.transpose("time", "member", "y", "x").data
            lazy[name, v] = da.nanmean(da.asarray(data).astype(np.float64), axis=0)
    (means,) = dask.compute(lazy) if lazy else ({},)
    return means


def scores_of(sums: dict, truth: dict | None, edges: np.ndarray | None, spacing_km: float,
              shape: tuple[int, int]) -> dict[str, float]:
    """{score name: value} of one source from its totals (`block_sums` summed); against `truth`'s totals for the
    scores that compare (none when `truth` is None: truth's own). `edges`: of the ramps' histograms (None: none
    were made); `shape`: (y, x) of the grid, for the spectra's wavenumbers."""
    out = {}
    for lag in LAGS:
        if lag in sums:
            out[autocorrelation_name(lag)] = _mean(correlation(sums[lag]))
    count, total, squares = sums["ramp"]
    out["ramp_std"] = float(np.sqrt(max(squares / count - (total / count) ** 2, 0.0))) if count else float("nan")
    if truth is not None and edges is not None and "histogram" in sums:
        out["ramp_wasserstein"] = wasserstein_from_histograms(edges, sums["histogram"], truth["histogram"])
        wavenumber = radial_bins(shape, spacing_km)[2]
        out["ramp_log_spectral_distance"] = log_spectral_distance(sums["power"].mean(axis=0), truth["power"][0],
                                                                  wavenumber, spacing_km)
    return out


def _mean(values: np.ndarray) -> float:
    """The mean of the finite values (over members); NaN, without a warning, when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _dataset(evaluation: Evaluation, totals: dict, series: Series, residual: dict[str, str],
             edges: dict[str, np.ndarray | None], spectrum_pairs: int | None) -> xr.Dataset:
    """The time scores as a Dataset: (model, variable) per score computed, truth's own (variable,)."""
    models, variables = list(evaluation.models), evaluation.variables
    shape = (evaluation.truth.sizes["y"], evaluation.truth.sizes["x"])
    found, truth_found = {}, {}
    for j, v in enumerate(variables):
        truth = totals[("truth", ""), v]
        for name, value in scores_of(truth, None, edges[v], evaluation.spacing_km, shape).items():
            truth_found.setdefault(name, np.full(len(variables), np.nan))[j] = value
        for i, m in enumerate(models):
            if (("model", m), v) in totals:
                for name, value in scores_of(totals[("model", m), v], truth, edges[v], evaluation.spacing_km,
                                             shape).items():
                    found.setdefault(name, np.full((len(models), len(variables)), np.nan))[i, j] = value
    data = {name: (("model", "variable"), found[name], SCORES[name].attrs()) for name in named(FROM_SERIES)
            if name in found}
    for name in named(FROM_SERIES):
        if SCORES[name].of_truth and name in truth_found:
            data[f"truth_{name}"] = (("variable",), truth_found[name],
                                     {"long_name": f"{SCORES[name].long_name}, of truth", "units": SCORES[name].units})
    kinds = {}
    for v, kind in residual.items():
        kinds.setdefault(kind, []).append(v)
    attrs = {"time_step": step_text(series.step), "time_series": series.counted,
             "time_pairs": int(series.pairs(1).size), "time_series_description": series.describe(),
             "time_residual": next(iter(kinds)) if len(kinds) == 1 else
             "; ".join(f"{', '.join(names)}: {kind}" for kind, names in kinds.items())}
    if spectrum_pairs is not None:
        attrs["ramp_spectra_pairs"] = spectrum_pairs
    return xr.Dataset(data, {"model": models, "variable": variables}, attrs)


# ---- a vortex track ----------------------------------------------------------------------------------------------

def track_smoothness(lat: np.ndarray, lon: np.ndarray, times) -> dict[str, tuple[np.ndarray, dict]]:
    """How smoothly vortex centres move: lat, lon (time, source) in degrees at `times` (sorted) →
    {name: ((source,) values in km, attributes)}, over pairs and triples of consecutive times in one series
    (`series_of`: a gap splits the track):

      track_step_km               mean distance between consecutive centres
      track_second_difference_km  mean |p(t+1) − 2 p(t) + p(t−1)| of the positions p, in the local east/north
                                  plane about p(t): 0 on a straight line at constant speed, 4a on a zig-zag
                                  that alternates a km to either side of one

    A name without a pair (or triple) is left out; a centre that is NaN leaves its steps out of the mean."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    series = series_of(times)
    out = {}
    first = series.pairs(1)
    if first.size:
        east, north = cases.local_km(lat[first + 1], lon[first + 1], lat[first], lon[first])
        out["track_step_km"] = (_nanmean(np.hypot(east, north)), {
            "long_name": "mean distance between the vortex centres of consecutive times", "units": "km"})
    middle = series.pairs(2) + 1
    if middle.size:
        east_before, north_before = cases.local_km(lat[middle - 1], lon[middle - 1], lat[middle], lon[middle])
        east_after, north_after = cases.local_km(lat[middle + 1], lon[middle + 1], lat[middle], lon[middle])
        second = np.hypot(east_before + east_after, north_before + north_after)
        out["track_second_difference_km"] = (_nanmean(second), {
            "long_name": "mean magnitude of the second difference in time of the vortex centre's position "
                         "(0 for a straight track at constant speed)", "units": "km"})
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite values; NaN, without a warning, where none is."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    return np.where(count > 0, np.where(finite, values, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


# ---- the report's figure -----------------------------------------------------------------------------------------

def point_series(evaluation: Evaluation, members: int = 3) -> xr.Dataset:
    """Every scored time at the grid points of POINTS: `<variable>` (source, point, time) of truth, the
    regression mean (when present) and the first `members` CorrDiff members; `series` (time,) numbers the
    series of consecutive times (a figure breaks its lines between them); lat/lon of each point."""
    ny, nx = evaluation.truth.sizes["y"], evaluation.truth.sizes["x"]
    j = xr.DataArray([min(int(fy * ny), ny - 1) for fy, _ in POINTS], dims="point")
    i = xr.DataArray([min(int(fx * nx), nx - 1) for _, fx in POINTS], dims="point")
    ensemble = evaluation.models["corrdiff"]
    chosen = {"truth": evaluation.truth.expand_dims(member=[0], axis=1)}
    if "regression" in evaluation.models:
        chosen["regression"] = evaluation.models["regression"]
    lazy = {}
    for v in evaluation.variables:
        for name, ds in chosen.items():
            if v in ds:
                lazy[name, v] = ds[v].isel(member=0, y=j, x=i).transpose("point", "time").data
        for m in range(min(members, ensemble.sizes["member"])):
            lazy[f"member {m}", v] = ensemble[v].isel(member=m, y=j, x=i).transpose("point", "time").data
    (values,) = dask.compute(lazy)
    sources = list(dict.fromkeys(name for name, _ in values))
    times = evaluation.truth["time"].values
    data = {}
    for v in evaluation.variables:
        stacked = np.full((len(sources), len(POINTS), times.size), np.nan)
        for k, name in enumerate(sources):
            if (name, v) in values:
                stacked[k] = values[name, v]
        data[v] = (("source", "point", "time"), stacked, dict(evaluation.truth[v].attrs))
    coords = {"source": sources, "time": times, "series": ("time", series_of_evaluation(evaluation).index)}
    if "lat" in evaluation.truth.coords and evaluation.truth["lat"].ndim == 2:
        coords |= {"lat": ("point", evaluation.truth["lat"].values[j.values, i.values]),
                   "lon": ("point", evaluation.truth["lon"].values[j.values, i.values])}
    return xr.Dataset(data, coords | {"j": ("point", j.values), "i": ("point", i.values)})


def report_section(evaluation: Evaluation, scores: xr.Dataset, out_dir: Path) -> list[tuple[str, list]]:
    """The report's time section [(heading, [(figure, caption)])]: the series at three points; none when the
    scores have no time scores."""
    if "time_step" not in scores.attrs:
        return []
    series = point_series(evaluation)
    path = plots.time_series_figure(Path(out_dir) / "time_series.png", series)
    caption = (f"Every scored time at three grid points (the centre and the points a quarter and three quarters "
               f"along each axis): truth, the regression mean and three CorrDiff members; lines break between "
               f"series. Time scores from {scores.attrs['time_series_description']}; residual: "
               f"{scores.attrs['time_residual']}.")
    return [("Time series at three points", [(path, caption)])]
