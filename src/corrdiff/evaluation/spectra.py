"""Isotropic power spectra and value distributions of fine fields, and the numbers that summarise them.

Spectrum of one field f (y, x) on a grid of spacing d km:

1. detrend: remove the field's mean (missing values, NaN, are then set to 0, the mean);
2. window (optional, default Hann): multiply by the separable 2-D Hann window w and divide by sqrt(mean(w²)),
   so that edge discontinuities of a non-periodic regional field do not leak power to small scales while the
   total power still estimates the variance;
3. P(kx, ky) = |FFT(f)|² / (ny·nx)², so that Σ P = mean(f²) (Parseval);
4. radial sum: each mode goes to the bin n = round(|k| / Δk), Δk = the coarser of 1/(nx·d), 1/(ny·d), and
   the spectrum is the power summed per bin (not averaged), in units². Without a window, Σ over all bins is
   exactly the field's variance. Bins beyond the Nyquist wavenumber 1/(2d) hold the grid's corner modes.

Wavenumbers are in cycles per km; wavelength = 1/k km.

Two numbers compare a model's spectrum (for an ensemble, the mean of its members' spectra) with the truth's:
the smallest-octave power ratio (summed power at wavelengths 2–4 grid spacings, predicted over true) and the
log-spectral distance, LSD = mean over the bins 0 < k ≤ k_nyq of |log10(P_pred(k) / P_true(k))|, which weighs
every bin alike, sees too much and too little power alike, and cannot hide one scale's excess behind another's
deficit.

The 1-D spectrum (`kind="1d"`) is the other common convention, used for instance in the CorrDiff paper's
figures: each row (along x) is Fourier transformed on its own, with its mean removed and no window, and the
power |FFT|² / nx² (both signs of k summed) is averaged over the rows; Σ over k is then exactly the mean of
the rows' variances. Its wavenumbers are those of one row, k = 0 … 1/(2d) in steps of 1/(nx·d).
"""

import warnings
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy.stats import wasserstein_distance

from corrdiff.evaluation.scores import PER_VARIABLE, SCORES
from corrdiff.evaluation.stores import Evaluation

HISTOGRAM_BINS = 2000  # fine bins: W1 and percentiles from histograms are within one bin width of exact
SPECTRA = {"2d": "isotropic 2-D spectra (mean removed, 2-D Hann window, power summed over rings of |k|)",
           "1d": "1-D spectra along x (each row's mean removed, no window, power averaged over rows)"}


class Distributions(NamedTuple):
    """What `compare_distributions` gives back; see there."""

    spectra: xr.Dataset
    histograms: xr.Dataset
    summary: xr.Dataset


def radial_bins(shape: tuple[int, int], spacing_km: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin index per rfft2 mode (ny, nx//2+1), mode multiplicity (same shape), bin wavenumbers in cycles/km)."""
    ny, nx = shape
    ky = np.fft.fftfreq(ny, d=spacing_km)
    kx = np.fft.rfftfreq(nx, d=spacing_km)
    dk = max(1.0 / (nx * spacing_km), 1.0 / (ny * spacing_km))
    index = np.rint(np.hypot(ky[:, None], kx[None, :]) / dk).astype(np.int64)
    # rfft2 keeps half the x-modes: every column but x-frequency 0 (and nx/2 for even nx) stands for two
    multiplicity = np.full(kx.shape, 2.0)
    multiplicity[0] = 1.0
    if nx % 2 == 0:
        multiplicity[-1] = 1.0
    return index, np.broadcast_to(multiplicity, index.shape), np.arange(index.max() + 1) * dk


def hann_window(shape: tuple[int, int]) -> np.ndarray:
    """Separable 2-D Hann window (y, x), scaled so mean(w²) = 1."""
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    return window / np.sqrt(np.mean(window**2))


def _anomaly(fields: np.ndarray, axis) -> np.ndarray:
    """`fields` minus their mean over `axis`, NaN/inf left out of the mean and then set to 0 (the mean)."""
    if np.isfinite(fields).all():
        return fields - fields.mean(axis=axis, keepdims=True)
    fields = np.where(np.isfinite(fields), fields, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN field: its anomaly is 0
        anomaly = fields - np.nanmean(fields, axis=axis, keepdims=True)
    return np.nan_to_num(anomaly, nan=0.0)


def isotropic_power(fields: np.ndarray, spacing_km: float, window: str | None = "hann") -> np.ndarray:
    """Radially summed power (..., wavenumber) of fields (..., y, x); see the module docstring."""
    fields = np.asarray(fields)
    shape = fields.shape[-2:]
    anomaly = _anomaly(fields, axis=(-2, -1))
    if window == "hann":
        anomaly = anomaly * hann_window(shape).astype(anomaly.dtype)
    elif window is not None:
        raise ValueError(f"window must be 'hann' or None, not {window!r}")
    index, multiplicity, wavenumber = radial_bins(shape, spacing_km)
    power = np.abs(np.fft.rfft2(anomaly)) ** 2 * (multiplicity / float(shape[0] * shape[1]) ** 2)
    flat = power.reshape(-1, index.size).astype(np.float64)
    nbins = wavenumber.size
    offsets = (np.arange(flat.shape[0])[:, None] * nbins + index.ravel()[None, :]).ravel()
    binned = np.bincount(offsets, weights=flat.ravel(), minlength=flat.shape[0] * nbins)
    return binned.reshape(fields.shape[:-2] + (nbins,))


def row_power(fields: np.ndarray, spacing_km: float) -> np.ndarray:
    """1-D power per wavenumber (..., nx//2 + 1) of fields (..., y, x): each row's mean removed (missing values
    then 0), no window, |rfft|² / nx² with both signs of k, averaged over the rows (see the module docstring)."""
    fields = np.asarray(fields)
    anomaly = _anomaly(fields, axis=-1)
    nx = fields.shape[-1]
    multiplicity = np.full(nx // 2 + 1, 2.0)
    multiplicity[0] = 1.0
    if nx % 2 == 0:
        multiplicity[-1] = 1.0
    power = np.abs(np.fft.rfft(anomaly, axis=-1)) ** 2 * (multiplicity / float(nx) ** 2)
    return power.mean(axis=-2, dtype=np.float64)


def wavenumbers(shape: tuple[int, int], spacing_km: float, kind: str = "2d") -> np.ndarray:
    """The wavenumbers (cycles/km) of the spectra of (y, x) fields: radial bins ("2d") or one row's ("1d")."""
    if kind == "2d":
        return radial_bins(shape, spacing_km)[2]
    if kind == "1d":
        return np.fft.rfftfreq(shape[1], d=spacing_km)
    raise ValueError(f"spectra must be one of {sorted(SPECTRA)}, not {kind!r}")


def spectrum(field: xr.DataArray, spacing_km: float, window: str | None = "hann", kind: str = "2d") -> xr.DataArray:
    """Lazy spectrum of a DataArray (..., y, x): dims (..., wavenumber), coord wavelength (km); `kind` "2d"
    (isotropic, `window` applies) or "1d" (per row, unwindowed)."""
    wavenumber = wavenumbers((field.sizes["y"], field.sizes["x"]), spacing_km, kind)
    func, kwargs = (isotropic_power, {"spacing_km": spacing_km, "window": window}) if kind == "2d" else \
        (row_power, {"spacing_km": spacing_km})
    power = xr.apply_ufunc(func, field, input_core_dims=[["y", "x"]],
                           output_core_dims=[["wavenumber"]], dask="parallelized", output_dtypes=[np.float64],
                           dask_gufunc_kwargs={"output_sizes": {"wavenumber": wavenumber.size}},
                           kwargs=kwargs)
    with np.errstate(divide="ignore"):
        wavelength = 1.0 / wavenumber
    units = field.attrs.get("units", "")
    return power.assign_coords(wavenumber=("wavenumber", wavenumber, {"units": "km-1"}),
                               wavelength=("wavenumber", wavelength, {"units": "km"})).assign_attrs(
        long_name=f"power per wavenumber bin of {field.name}", units=f"({units})2" if units else "1")


def smallest_octave_power_ratio(power: np.ndarray, true_power: np.ndarray, wavenumber: np.ndarray,
                                spacing_km: float) -> float:
    """Predicted over true power in the smallest-scale octave, wavelengths 2d–4d (k in (k_nyq/2, k_nyq])."""
    nyquist = 1.0 / (2.0 * spacing_km)
    octave = (wavenumber > nyquist / 2) & (wavenumber <= nyquist * (1 + 1e-9))
    return float(np.sum(power[..., octave]) / np.sum(true_power[..., octave]))


def log_spectral_distance(power: np.ndarray, true_power: np.ndarray, wavenumber: np.ndarray,
                          spacing_km: float) -> float:
    """Mean over wavenumbers 0 < k <= k_nyq of |log10(power / true_power)|: 0 for identical spectra, 2·log10(a)
    for a field scaled by a. Corner bins beyond Nyquist (partial rings) and bins where either power is zero or
    not finite are left out; NaN when none is left. Dimensionless (log10 units: 0.1 is a factor 1.26 on average).
    """
    nyquist = 1.0 / (2.0 * spacing_km)
    power, true_power = np.asarray(power, np.float64), np.asarray(true_power, np.float64)
    use = (wavenumber > 0) & (wavenumber <= nyquist * (1 + 1e-9))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.log10(power[..., use] / true_power[..., use]))
    ratio = ratio[np.isfinite(ratio)]
    return float(ratio.mean()) if ratio.size else float("nan")


def wasserstein_from_histograms(edges: np.ndarray, counts: np.ndarray, true_counts: np.ndarray) -> float:
    """Wasserstein-1 distance between two histograms on the same edges (each bin's mass at its centre)."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    if counts.sum() == 0 or true_counts.sum() == 0:
        return float("nan")
    return float(wasserstein_distance(centres, centres, counts, true_counts))


def quantile_from_histogram(edges: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The q-quantile of a histogram, interpolating linearly within the bin where the CDF crosses q."""
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    if cdf[-1] == 0:
        return float("nan")
    return float(np.interp(q * cdf[-1], cdf, edges))


def sample_times(times: np.ndarray, max_times: int) -> np.ndarray:
    """At most max_times times, evenly spaced over `times` (all when max_times <= 0 or enough)."""
    if max_times <= 0 or len(times) <= max_times:
        return np.asarray(times)
    return np.asarray(times)[np.unique(np.linspace(0, len(times) - 1, max_times).round().astype(int))]


def compare_distributions(evaluation: Evaluation, max_times: int = 16, window: str | None = "hann",
                          bins: int = HISTOGRAM_BINS, scores: xr.Dataset | None = None,
                          kind: str = "2d") -> Distributions:
    """Spectra, histograms and their summary numbers for truth and every model, over up to max_times times.

    `scores` (of `score_models`, same evaluation): its value ranges set the histograms' common range,
    which saves a pass over the data; without it the range is found first. `kind`: "2d" isotropic spectra
    (windowed with `window`) or "1d" spectra along x (unwindowed); see the module docstring.

    Returns (spectra, histograms, summary):
      spectra    `<var>` (source, member, wavenumber): time-mean spectrum of each member; source "truth"
                 and the models; NaN beyond a source's members.
      histograms `<var>` (source, bin) counts over the sampled times (and members), edges `<var>_edges`.
      summary    (model, variable): power_ratio_smallest_octave, log_spectral_distance, wasserstein,
                 p999_difference, and
                 truth_p999 (variable).
    """
    times = sample_times(evaluation.truth["time"].values, max_times)
    sources = {"truth": evaluation.truth.sel(time=times).expand_dims(member=[0], axis=1)}
    sources.update({name: ds.sel(time=times) for name, ds in evaluation.models.items()})
    variables = evaluation.variables
    ranges = ranges_of(scores) if scores is not None else value_ranges(sources, variables)
    lazy_spectra, lazy_counts, edges = {}, {}, {}
    for v in variables:
        lo, hi = ranges[v]
        edges[v] = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for s, ds in sources.items():
            if v in ds:
                lazy_spectra[s, v] = spectrum(ds[v], evaluation.spacing_km, window, kind).mean("time").data
                lazy_counts[s, v] = da.histogram(ds[v].data, bins=edges[v])[0]
    spectra_values, counts = dask.compute(lazy_spectra, lazy_counts)
    return _assemble(evaluation, sources, times, spectra_values, counts, edges, kind)


def ranges_of(scores: xr.Dataset) -> dict[str, tuple[float, float]]:
    """(min, max) of each variable over truth and every model, from the scores' value ranges."""
    lows = np.fmin(scores["truth_min"].values, np.fmin.reduce(scores["forecast_min"].values, axis=0))
    highs = np.fmax(scores["truth_max"].values, np.fmax.reduce(scores["forecast_max"].values, axis=0))
    return {str(v): (float(lo) if np.isfinite(lo) else 0.0, float(hi) if np.isfinite(hi) else 1.0)
            for v, lo, hi in zip(scores["variable"].values, lows, highs)}


def value_ranges(sources: dict[str, xr.Dataset], variables) -> dict[str, tuple[float, float]]:
    """(min, max) of each variable over all sources, ignoring NaN: the common histogram range."""
    lazy = {(s, v): (da.nanmin(ds[v].data), da.nanmax(ds[v].data)) for s, ds in sources.items()
            for v in variables if v in ds}
    (values,) = dask.compute(lazy)
    ranges = {}
    for v in variables:
        lows = [float(lo) for (s, var), (lo, _) in values.items() if var == v and np.isfinite(lo)]
        highs = [float(hi) for (s, var), (_, hi) in values.items() if var == v and np.isfinite(hi)]
        ranges[v] = (min(lows, default=0.0), max(highs, default=1.0))
    return ranges


def _assemble(evaluation, sources, times, spectra_values, counts, edges, kind) -> Distributions:
    """The computed spectra and counts as Datasets (NaN where a source lacks a variable or members)."""
    names, variables = list(sources), evaluation.variables
    max_members = max(int(ds.sizes["member"]) for ds in sources.values())
    wavenumber = wavenumbers((evaluation.truth.sizes["y"], evaluation.truth.sizes["x"]), evaluation.spacing_km, kind)
    spectra, histograms = {}, {}
    for v in variables:
        power = np.full((len(names), max_members, wavenumber.size), np.nan)
        hist = np.full((len(names), len(edges[v]) - 1), np.nan)
        for i, s in enumerate(names):
            if (s, v) in spectra_values:
                power[i, : spectra_values[s, v].shape[0]] = spectra_values[s, v]
                hist[i] = counts[s, v]
        units = evaluation.truth[v].attrs.get("units", "")
        spectra[v] = (("source", "member", "wavenumber"), power,
                      {"long_name": f"time-mean power per wavenumber bin of {v}", "units": f"({units})2"})
        histograms[v] = (("source", "bin"), hist, {"long_name": f"counts of {v} per bin", "units": "1"})
        histograms[f"{v}_edges"] = ((f"{v}_bin_edge",), edges[v], {"units": units})
    with np.errstate(divide="ignore"):
        wavelength = 1.0 / wavenumber
    coords = {"source": names, "member": np.arange(max_members),
              "wavenumber": ("wavenumber", wavenumber, {"units": "km-1"}),
              "wavelength": ("wavenumber", wavelength, {"units": "km"})}
    spectra_ds = xr.Dataset(spectra, coords, {"grid_spacing_km": evaluation.spacing_km, "times_used": len(times),
                                              "spectra": kind, "spectra_method": SPECTRA[kind]})
    hist_ds = xr.Dataset(histograms, {"source": names}, {"times_used": len(times)})
    return Distributions(spectra_ds, hist_ds, summarise(spectra_ds, hist_ds, evaluation))


def summarise(spectra: xr.Dataset, histograms: xr.Dataset, evaluation: Evaluation) -> xr.Dataset:
    """Summary numbers (model, variable) comparing each model's spectra and histograms with truth's."""
    models, variables = list(evaluation.models), evaluation.variables
    ratio, lsd, w1, p999 = (np.full((len(models), len(variables)), np.nan) for _ in range(4))
    truth_p999 = np.full(len(variables), np.nan)
    wavenumber = spectra["wavenumber"].values
    for j, v in enumerate(variables):
        edges = histograms[f"{v}_edges"].values
        true_counts = histograms[v].sel(source="truth").values
        true_power = np.nanmean(spectra[v].sel(source="truth").values[:1], axis=0)
        truth_p999[j] = quantile_from_histogram(edges, true_counts, 0.999)
        for i, m in enumerate(models):
            if v not in evaluation.models[m]:
                continue
            counts = histograms[v].sel(source=m).values
            power = np.nanmean(spectra[v].sel(source=m).values, axis=0)  # mean over members
            ratio[i, j] = smallest_octave_power_ratio(power, true_power, wavenumber, evaluation.spacing_km)
            lsd[i, j] = log_spectral_distance(power, true_power, wavenumber, evaluation.spacing_km)
            w1[i, j] = wasserstein_from_histograms(edges, counts, true_counts)
            p999[i, j] = quantile_from_histogram(edges, counts, 0.999) - truth_p999[j]
    dims = ("model", "variable")
    return xr.Dataset({
        "power_ratio_smallest_octave": (dims, ratio, SCORES["power_ratio_smallest_octave"].attrs()),
        "log_spectral_distance": (dims, lsd, SCORES["log_spectral_distance"].attrs()),
        "wasserstein": (dims, w1, SCORES["wasserstein"].attrs()),
        "p999_difference": (dims, p999, SCORES["p999_difference"].attrs()),
        "truth_p999": (("variable",), truth_p999, {"long_name": "99.9th percentile of truth", "units": PER_VARIABLE}),
    }, {"model": models, "variable": variables},
        {"summary_times": int(histograms.attrs["times_used"]), "spectra": spectra.attrs.get("spectra", "2d"),
         "spectra_method": spectra.attrs.get("spectra_method", SPECTRA["2d"])})
