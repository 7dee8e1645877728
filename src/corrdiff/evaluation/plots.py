"""The report's figures, one function per figure, each writing a modest-sized PNG (matplotlib, Agg).

Every axis carries its units. Maps are on plain longitude/latitude axes with the coastlines shipped in the
package (`corrdiff.evaluation.coastlines`), their ticks read as a map's (90°W, 23°N: `degrees_label`): nothing is
downloaded and cartopy is not needed.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from corrdiff.evaluation import coastlines  # noqa: E402

DPI = 100
PANEL = (3.4, 2.8)  # inches per panel: 3 panels across stay near 1000 px
MODEL_COLOURS = {"truth": "black", "interp": "tab:orange", "regression": "tab:green", "rf": "tab:purple"}
CORRDIFF = "tab:blue"
SPECTRA_TITLES = {"2d": "isotropic 2-D power spectra (mean removed, Hann window)",
                  "1d": "1-D power spectra along x (row means removed, no window)"}
# NWS-like reflectivity scale, 5 dBZ steps from 5 to 75 dBZ
REFLECTIVITY_COLOURS = ["#04e9e7", "#019ff4", "#0300f4", "#02fd02", "#01c501", "#008e00", "#fdf802", "#e5bc00",
                        "#fd9500", "#fd0000", "#d40000", "#bc0000", "#f800fd", "#9854c6"]


def colour_of(model: str, index: int) -> str:
    if model == "corrdiff":
        return CORRDIFF
    return MODEL_COLOURS.get(model, f"C{(index + 4) % 10}")


def units_of(field: xr.DataArray) -> str:
    return str(field.attrs.get("units", "1"))


def label_of(name: str, field: xr.DataArray) -> str:
    return f"{field.attrs.get('long_name', name)} [{units_of(field)}]"


NON_NEGATIVE_UNITS = {"mm", "mm h-1", "kg m-2", "kg m-2 s-1", "%"}
NON_NEGATIVE_WORDS = ("precip", "rain", "snow", "speed", "humid", "cloud")


def is_non_negative(name: str, units: str, values: np.ndarray) -> bool:
    """Whether finite `values` are a field bounded below by zero: none negative, and either a precipitation-
    like name or units, or a smallest value near zero next to the largest (a dry field, all 0, is one)."""
    hinted = units.lower() in NON_NEGATIVE_UNITS or any(word in name.lower() for word in NON_NEGATIVE_WORDS)
    if not values.size:
        return hinted
    low, high = float(values.min()), float(values.max())
    return low >= 0 and (hinted or low <= 0.05 * high)


def colour_scale(name: str, field: xr.DataArray, values: np.ndarray):
    """(colour map, norm) for a variable, from the values of every panel drawn on it:

    - reflectivity (dBZ): the radar scale in 5 dBZ steps from 5 dBZ (below: white);
    - non-negative fields (precipitation, speeds, anything starting at 0): a sequential map from 0, its
      lightest colour, to the 99.5th percentile of the non-zero values; a dry field is drawn all in that
      lightest colour, not on a −0.1…0.1 scale with 0 in the middle;
    - signed fields (winds, vorticity): diverging, symmetric about 0;
    - temperatures (K, °C): a temperature map over the 0.5–99.5th percentiles; viridis otherwise.
    """
    units, lower = units_of(field), name.lower()
    finite = np.asarray(values)[np.isfinite(values)]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    if units.lower() == "dbz" or "refl" in lower:
        levels = np.arange(5, 80, 5)
        cmap = ListedColormap(REFLECTIVITY_COLOURS, name="reflectivity").with_extremes(under="white", over="#6a0080")
        return cmap, BoundaryNorm(levels, cmap.N)
    if is_non_negative(name, units, finite):
        wet = finite[finite > 0]  # of the non-zero values: mostly-dry rain would otherwise saturate the scale
        top = float(np.percentile(wet, 99.5)) if wet.size else 1.0
        cmap = "Blues" if "precip" in lower or "rain" in lower else "YlGnBu"
        return plt.get_cmap(cmap), Normalize(0.0, top)
    if lo < 0 < hi and min(-lo, hi) > 0.2 * max(-lo, hi):
        bound = max(-lo, hi)
        cmap = "PuOr_r" if "vort" in lower or units == "s-1" else "RdBu_r"
        return plt.get_cmap(cmap), Normalize(-bound, bound)
    if units in ("K", "degC", "°C") or lower.startswith("t2") or "temp" in lower:
        return plt.get_cmap("RdYlBu_r"), Normalize(lo, hi if hi > lo else lo + 1)
    return plt.get_cmap("viridis"), Normalize(lo, hi if hi > lo else lo + 1)


def _panels(n: int):
    """A figure with one panel per variable, at most three per row; unused panels hidden by the caller."""
    nrows, ncols = _grid(3, n)
    return plt.subplots(nrows, ncols, figsize=(PANEL[0] * ncols, PANEL[1] * nrows + 0.3),
                        layout="constrained", squeeze=False)


def _grid(ncols_max: int, n: int) -> tuple[int, int]:
    ncols = min(ncols_max, n)
    return math.ceil(n / ncols), ncols


def degrees_label(value: float, axis: str, decimals: int | None = None) -> str:
    """`value` degrees of longitude (`axis` "lon") or latitude ("lat") as a map writes them: 90°W, 23°N, 23.5°S,
    0°, 180°; longitudes wrapped to (−180, 180]. `decimals`: fixed decimals (default: as few as the value needs)."""
    # cartopy's LongitudeFormatter does this on its GeoAxes; the maps here are plain axes, cartopy no dependency
    value = round(float(value), 6 if decimals is None else decimals)  # tick positions carry float noise
    if axis == "lon":
        value = 180.0 - (180.0 - value) % 360.0  # (−180, 180]: 270 and −90 are 90°W, −180 is 180°
    magnitude = f"{abs(value):g}" if decimals is None else f"{abs(value):.{decimals}f}"
    if value == 0 or (axis == "lon" and abs(value) == 180):
        return f"{magnitude}°"
    hemisphere = ("E", "W") if axis == "lon" else ("N", "S")
    return f"{magnitude}°{hemisphere[value < 0]}"


def geographic_axes(ax) -> None:
    """Label the axes of a map on longitude (x) and latitude (y) degrees, each tick as `degrees_label` writes it."""
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: degrees_label(value, "lon")))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: degrees_label(value, "lat")))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")


def _tidy_numbers(ax, axis: str = "x") -> None:
    """At most 5 ticks, large or small numbers as ×10ⁿ: labels of fields like vorticity (1e-4) stay apart."""
    from matplotlib.ticker import MaxNLocator

    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(5))
    ax.ticklabel_format(axis=axis, style="sci", scilimits=(-3, 4), useMathText=True)


def _log_wavelength_axis(ax) -> None:
    """Log wavelength axis labelled with plain numbers (10, 20, 50, 100 ...), minor labels off."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _finish(fig, axes, used: int, title: str, path: Path) -> Path:
    """Hide the panels after the first `used`, title the figure, save it."""
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _ensembles(scores: xr.Dataset) -> list[tuple[str, int]]:
    """(model, members) of every model with more than one member."""
    members = {str(m): int(scores["members"].sel(model=m)) for m in scores["model"].values}
    return [(model, m) for model, m in members.items() if m > 1]


def map_panels(path: Path, name: str, panels: dict[str, np.ndarray], std: np.ndarray | None,
               lat: np.ndarray, lon: np.ndarray, field: xr.DataArray, when: str) -> Path:
    """Maps of one variable at one time: the panels on one colour scale (from all of them), the ensemble std
    on its own; coastlines on every panel."""
    n = len(panels) + (std is not None)
    nrows, ncols = _grid(3, n)
    fig = plt.figure(figsize=(PANEL[0] * ncols, PANEL[1] * nrows + 0.4), layout="constrained")
    cmap, norm = colour_scale(name, field, np.concatenate([np.ravel(v) for v in panels.values()]))
    fig.suptitle(f"{field.attrs.get('long_name', name)} at {when}")
    items = [(title, values, cmap, norm, f"{name} [{units_of(field)}]") for title, values in panels.items()]
    if std is not None:
        finite = std[np.isfinite(std)]
        top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        items.append(("ensemble std", std, plt.get_cmap("magma_r"), Normalize(0, top if top > 0 else 1.0),
                      f"std of {name} [{units_of(field)}]"))
    coast = coastlines.lines_in(lon, lat)
    for k, (title, values, panel_cmap, panel_norm, label) in enumerate(items):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        mesh = ax.pcolormesh(lon, lat, values, cmap=panel_cmap, norm=panel_norm, shading="auto")
        coastlines.draw(ax, lon, lat, coast)
        ax.set_title(title, fontsize=10)
        geographic_axes(ax)
        ax.set_aspect(1.0 / max(np.cos(np.radians(np.nanmean(lat))), 0.1))
        # a colour bar per panel: shared ones upset the grid layout; the value panels share one scale
        extend = "both" if isinstance(panel_norm, BoundaryNorm) else "max" if panel_norm.vmin == 0 else "neither"
        fig.colorbar(mesh, ax=ax, shrink=0.85, label=label, extend=extend)
    return _save(fig, path)


def spectra_figure(path: Path, spectra: xr.Dataset, fields: xr.Dataset, spacing_km: float) -> Path:
    """Power spectra per variable against wavelength (km): truth, models, every CorrDiff member; 2-D isotropic
    or 1-D along x, as `spectra.attrs["spectra"]` says (the title says which)."""
    variables = [v for v in fields.data_vars if v in spectra]
    fig, axes = _panels(len(variables))
    wavelength = spectra["wavelength"].values
    keep = (spectra["wavenumber"].values > 0) & (wavelength >= 2 * spacing_km * (1 - 1e-9))
    for ax, v in zip(axes.ravel(), variables):
        for i, source in enumerate(spectra["source"].values):
            power = spectra[v].sel(source=source).values  # (member, wavenumber)
            members = power[np.isfinite(power).all(axis=1)]
            if members.size == 0:
                continue
            colour = colour_of(str(source), i)
            if members.shape[0] > 1:
                for member in members:
                    ax.loglog(wavelength[keep], member[keep], color=colour, alpha=0.25, linewidth=0.6)
                label = f"{source} (mean of {members.shape[0]} members)"
            else:
                label = str(source)
            ax.loglog(wavelength[keep], members.mean(axis=0)[keep], color=colour, label=label,
                      linewidth=2.0 if source == "truth" else 1.3)
        ax.axvspan(2 * spacing_km, 4 * spacing_km, color="grey", alpha=0.12, linewidth=0)
        ax.invert_xaxis()  # large scales left, small scales right
        _log_wavelength_axis(ax)
        ax.set_xlabel("wavelength [km]")
        ax.set_ylabel(f"power per bin [({units_of(fields[v])})²]")
        ax.set_title(v, fontsize=10)
    axes.ravel()[0].legend(fontsize=7)
    return _finish(fig, axes, len(variables),
                   f"{SPECTRA_TITLES[spectra.attrs.get('spectra', '2d')]}; shaded: 2-4 grid spacings", path)


def pdf_figure(path: Path, histograms: xr.Dataset, fields: xr.Dataset, display_bins: int = 80) -> Path:
    """Value distributions (probability density, log scale) per variable: truth and every model."""
    variables = [v for v in fields.data_vars if v in histograms]
    fig, axes = _panels(len(variables))
    for ax, v in zip(axes.ravel(), variables):
        edges = histograms[f"{v}_edges"].values
        group = max(1, (edges.size - 1) // display_bins)  # coarser bins for display: fine ones are noisy
        coarse_edges = edges[::group]
        for i, source in enumerate(histograms["source"].values):
            counts = histograms[v].sel(source=source).values
            if not np.isfinite(counts).all() or counts.sum() == 0:
                continue
            usable = (coarse_edges.size - 1) * group
            coarse = counts[:usable].reshape(-1, group).sum(axis=1)
            density = coarse / (counts.sum() * np.diff(coarse_edges))
            ax.stairs(np.where(density > 0, density, np.nan), coarse_edges, color=colour_of(str(source), i),
                      label=str(source), linewidth=2.0 if source == "truth" else 1.2)
        ax.set_yscale("log")
        _tidy_numbers(ax, "x")
        ax.set_xlabel(label_of(v, fields[v]))
        ax.set_ylabel(f"probability density [({units_of(fields[v])})⁻¹]")
        ax.set_title(v, fontsize=10)
    axes.ravel()[0].legend(fontsize=7)
    return _finish(fig, axes, len(variables), "distributions of values (log density shows the tails)", path)


def rank_histogram_figure(path: Path, scores: xr.Dataset) -> Path:
    """Rank histograms of every ensemble model (more than one member), normalised so that flat = 1."""
    ensembles = _ensembles(scores)
    variables = list(scores["variable"].values)
    fig, axes = _panels(len(variables))
    for ax, v in zip(axes.ravel(), variables):
        width = 0.8 / max(len(ensembles), 1)
        for i, (model, members) in enumerate(ensembles):
            counts = scores["rank_histogram"].sel(model=model, variable=v).values[: members + 1]
            if not np.isfinite(counts).all() or counts.sum() == 0:
                continue
            ranks = np.arange(members + 1)
            ax.bar(ranks + (i - (len(ensembles) - 1) / 2) * width, counts / counts.sum() * (members + 1),
                   width=width, color=colour_of(str(model), i), label=f"{model} ({members} members)")
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlabel("rank of truth among the members [1]")
        ax.set_ylabel("frequency × (M + 1) [1]")
        ax.set_title(str(v), fontsize=10)
    if ensembles:
        axes.ravel()[0].legend(fontsize=7)
    return _finish(fig, axes, len(variables),
                   "rank histograms: flat (= 1) when calibrated; U-shaped when over-confident", path)


def spread_skill_figure(path: Path, scores: xr.Dataset) -> Path:
    """Per-time corrected spread against RMSE of the ensemble mean, with the 1:1 line."""
    ensembles = _ensembles(scores)
    variables = list(scores["variable"].values)
    fig, axes = _panels(len(variables))
    for ax, v in zip(axes.ravel(), variables):
        units = str(scores["units"].sel(variable=v).values)
        top = 0.0
        for i, (model, members) in enumerate(ensembles):
            rmse = scores["rmse_by_time"].sel(model=model, variable=v).values
            spread = scores["spread_by_time"].sel(model=model, variable=v).values * np.sqrt((members + 1) / members)
            ratio = float(scores["spread_skill"].sel(model=model, variable=v))
            ax.scatter(rmse, spread, s=10, color=colour_of(str(model), i), label=f"{model}: ratio {ratio:.3g}")
            top = max(top, np.nanmax(rmse, initial=0.0), np.nanmax(spread, initial=0.0))
        top = top * 1.05 if top > 0 else 1.0
        ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        _tidy_numbers(ax, "x")
        _tidy_numbers(ax, "y")
        ax.set_xlabel(f"RMSE of ensemble mean [{units}]")
        ax.set_ylabel(f"spread · √((M+1)/M) [{units}]")
        ax.set_title(str(v), fontsize=10)
        if ensembles:
            ax.legend(fontsize=7)
    return _finish(fig, axes, len(variables),
                   "spread–skill, one point per time: on the 1:1 line when calibrated", path)


def scores_by_time_figure(path: Path, scores: xr.Dataset) -> Path:
    """CRPS per time of every model (for one member the CRPS is the MAE)."""
    variables = list(scores["variable"].values)
    fig, axes = _panels(len(variables))
    times = scores["time"].values
    for ax, v in zip(axes.ravel(), variables):
        for i, model in enumerate(scores["model"].values):
            crps = scores["crps_by_time"].sel(model=model, variable=v).values
            if np.isfinite(crps).any():
                ax.plot(times, crps, marker=".", markersize=3, linewidth=1, color=colour_of(str(model), i),
                        label=str(model))
        ax.set_xlabel("time [UTC]")
        ax.set_ylabel(f"CRPS [{scores['units'].sel(variable=v).values}]")
        ax.set_title(str(v), fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        _tidy_numbers(ax, "y")
    axes.ravel()[0].legend(fontsize=7)
    return _finish(fig, axes, len(variables), "CRPS per time (equals the MAE for one-member forecasts)", path)


def time_series_figure(path: Path, series: xr.Dataset, members_alpha: float = 0.7) -> Path:
    """Values against time at a few points (`time_scores.point_series`): one row of panels per variable, one
    column per point; truth black, the regression mean green, members blue; lines break between series."""
    variables = [v for v in series.data_vars]
    points = series.sizes["point"]
    row_height = min(PANEL[1], 11.0 / max(len(variables), 1))  # many variables: shorter rows, a modest figure
    fig, axes = plt.subplots(len(variables), points, figsize=(PANEL[0] * points, row_height * len(variables) + 0.4),
                             layout="constrained", squeeze=False)
    times, runs = series["time"].values, series["series"].values
    segments = [np.flatnonzero(runs == run) for run in np.unique(runs)]
    for row, v in enumerate(variables):
        for p in range(points):
            ax = axes[row, p]
            for source in series["source"].values:
                values = series[v].sel(source=source).values[p]
                name = str(source)
                style = ({"color": "black", "linewidth": 1.8, "zorder": 3} if name == "truth" else
                         {"color": MODEL_COLOURS["regression"], "linewidth": 1.3, "zorder": 2} if name == "regression"
                         else {"color": CORRDIFF, "linewidth": 0.8, "alpha": members_alpha})
                for n, segment in enumerate(segments):
                    ax.plot(times[segment], values[segment], marker="." if segment.size == 1 else None,
                            markersize=3, label=name if n == 0 else None, **style)
            where = (f"{degrees_label(float(series['lat'][p]), 'lat', 2)} "
                     f"{degrees_label(float(series['lon'][p]), 'lon', 2)}" if "lat" in series.coords else
                     f"y={int(series['j'][p])}, x={int(series['i'][p])}")
            ax.set_title(f"{v} at {where}", fontsize=9)
            ax.set_ylabel(label_of(v, series[v]), fontsize=8)
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            _tidy_numbers(ax, "y")
    axes[0, 0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("time [UTC]")
    fig.suptitle("time series at three points: truth, the regression mean and CorrDiff members", fontsize=10)
    return _save(fig, path)
