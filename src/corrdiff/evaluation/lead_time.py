"""Skill by forecast lead time, for ensembles downscaled from forecasts.

An ensemble made from forecasts (`corrdiff generate --input`) carries, along `time` (the valid time), the
coordinates `lead_time` (CF standard_name forecast_period) and `forecast_reference_time`: time × step
flattened. `by_lead_time` groups every per-time score of `corrdiff.evaluation.metrics.score_models` by lead
time; `corrdiff score` prints the tables and the report draws CRPS and MAE against lead time.

Scores of a lead time pool its times with equal weight, each as `corrdiff.evaluation.scores.SCORES` says (its
`lead_time`): MAE, bias and CRPS are means of the per-time values, RMSE and spread roots of mean squares, and
spread/skill is that of the pooled spread and RMSE. That equals pooling the pixels when every time has as many
valid pixels, as it has unless fields hold NaN.
"""

from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff.evaluation.plots import _finish, _panels, colour_of
from corrdiff.evaluation.scores import MEAN, named, ROOT_MEAN_SQUARE, SCORES, SPREAD_SKILL

LEAD = "lead_time"
REFERENCE = "forecast_reference_time"
HOUR = np.timedelta64(3600, "s")
UNIT_HOURS = {"s": 1 / 3600, "sec": 1 / 3600, "second": 1 / 3600, "seconds": 1 / 3600, "min": 1 / 60,
              "minute": 1 / 60, "minutes": 1 / 60, "h": 1.0, "hour": 1.0, "hours": 1.0, "day": 24.0, "days": 24.0}


def lead_hours(forecast: xr.Dataset) -> np.ndarray | None:
    """Lead time (hours, float) of each time of a forecast with `lead_time` and `forecast_reference_time`
    coordinates along `time`; None when it has not both (not made from forecasts)."""
    if LEAD not in forecast.coords or REFERENCE not in forecast.coords or forecast[LEAD].dims != ("time",):
        return None
    values = np.asarray(forecast[LEAD].values)
    if np.issubdtype(values.dtype, np.timedelta64):
        return values / HOUR
    units = str(forecast[LEAD].attrs.get("units", "hours")).split(" since")[0].strip().lower()
    return values.astype(np.float64) * UNIT_HOURS.get(units, 1.0)


def by_lead_time(scores: xr.Dataset, hours: np.ndarray) -> xr.Dataset:
    """`scores` with `<metric>_by_lead_time` (model, variable, lead_time) for every per-time metric pooled by lead
    time (`corrdiff.evaluation.scores`) and `times_by_lead_time` (lead_time); `hours` (time,) is the lead time of
    each scored time."""
    leads = np.unique(hours[np.isfinite(hours)])
    members = scores["members"].values.astype(np.float64)[:, None, None]
    data, counts = {}, np.array([int(np.sum(hours == lead)) for lead in leads])
    grouped = {}
    for metric in named(lead_time=MEAN) + named(lead_time=ROOT_MEAN_SQUARE):
        per_time = scores[f"{metric}_by_time"].transpose("model", "variable", "time").values
        power = 2 if SCORES[metric].lead_time == ROOT_MEAN_SQUARE else 1
        with np.errstate(invalid="ignore"):
            columns = [_nanmean(per_time[..., hours == lead] ** power) ** (1 / power) for lead in leads]
        grouped[metric] = np.stack(columns, axis=-1) if columns else np.zeros(per_time.shape[:2] + (0,))
    with np.errstate(invalid="ignore", divide="ignore"):
        for metric in named(lead_time=SPREAD_SKILL):
            grouped[metric] = np.sqrt((members + 1) / members) * grouped["spread"] / grouped["rmse"]
    for metric, values in grouped.items():
        source = scores.get(f"{metric}_by_time")
        attrs = dict(source.attrs) if source is not None else {"long_name": metric, "units": "1"}
        attrs["long_name"] = attrs.get("long_name", metric).replace(", per time", ", per lead time")
        data[f"{metric}_by_lead_time"] = (("model", "variable", LEAD), values, attrs)
    data["times_by_lead_time"] = ((LEAD,), counts, {"long_name": "scored times of each lead time"})
    coords = {LEAD: (LEAD, leads, {"standard_name": "forecast_period", "long_name": "forecast lead time",
                                   "units": "hours"})}
    return scores.merge(xr.Dataset(data, coords))


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis, ignoring NaN; NaN (no warning) where every value is NaN."""
    finite = np.isfinite(values)
    count = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def add_lead_time_scores(scores: xr.Dataset, evaluation) -> xr.Dataset:
    """`by_lead_time` when the predictions of `evaluation` (a `stores.Evaluation`) carry lead times, else
    `scores` unchanged. Times are the scores' (those every input has)."""
    forecast = evaluation.predictions
    hours = lead_hours(forecast)
    if hours is None:
        return scores
    lead = xr.DataArray(hours, dims="time", coords={"time": forecast["time"].values})
    return by_lead_time(scores, np.asarray(lead.sel(time=scores["time"].values).values, np.float64))


def as_hours(values) -> np.ndarray:
    """Lead times as float hours, whether stored as hours or decoded by xarray as timedelta64."""
    values = np.asarray(values)
    return values / HOUR if np.issubdtype(values.dtype, np.timedelta64) else values.astype(np.float64)


def lead_time_tables(scores: xr.Dataset) -> list:
    """CRPS and MAE by lead time as rich Tables (rows: variable and model; columns: lead times); none when
    the scores have no lead time."""
    if "crps_by_lead_time" not in scores:
        return []
    from rich import box
    from rich.table import Table

    leads = scores[LEAD].values
    tables = []
    for metric in ("crps", "mae"):
        table = Table(title=f"{SCORES[metric].title} by lead time", box=box.SIMPLE_HEAD, pad_edge=False,
                      collapse_padding=True)
        table.add_column("variable", no_wrap=True)
        table.add_column("model", no_wrap=True)
        for hours in as_hours(leads):
            table.add_column(f"{hours:g} h", justify="right", no_wrap=True)
        units = {str(v): str(u) for v, u in zip(scores["variable"].values, scores["units"].values)} \
            if "units" in scores.coords else {}
        for variable in scores["variable"].values:
            label = f"{variable} [{units[str(variable)]}]" if units.get(str(variable)) else str(variable)
            for model in scores["model"].values:
                row = scores[f"{metric}_by_lead_time"].sel(model=model, variable=variable).values
                if np.isnan(row).all():
                    continue
                table.add_row(label, str(model), *[f"{v:.4g}" if np.isfinite(v) else "–" for v in row])
                label = ""
        tables.append(table)
    return tables


def lead_time_figure(path: Path, scores: xr.Dataset) -> Path:
    """CRPS (solid) and MAE (dashed) against lead time, one panel per variable, one colour per model."""
    variables = list(scores["variable"].values)
    fig, axes = _panels(len(variables))
    hours = as_hours(scores[LEAD].values)
    units = scores["units"].values if "units" in scores.coords else [""] * len(variables)
    for ax, variable, unit in zip(axes.ravel(), variables, units):
        for k, model in enumerate(scores["model"].values):
            colour = colour_of(str(model), k)
            crps = scores["crps_by_lead_time"].sel(model=model, variable=variable).values
            if np.isnan(crps).all():
                continue
            ax.plot(hours, crps, "-o", ms=3, color=colour, label=f"{model} CRPS")
            ax.plot(hours, scores["mae_by_lead_time"].sel(model=model, variable=variable).values, "--",
                    color=colour, label=f"{model} MAE")
        ax.set_xlabel("lead time [h]")
        ax.set_ylabel(f"{variable} CRPS, MAE [{unit}]")
    axes.ravel()[0].legend(fontsize=7)
    return _finish(fig, axes, len(variables), "skill by forecast lead time (solid: CRPS, dashed: MAE of the "
                   "ensemble mean)", path)


def report_section(scores: xr.Dataset, out_dir: Path) -> list[tuple[str, list[tuple[Path, str]]]]:
    """The report's lead-time section [(heading, [(figure, caption)])]; none without lead times."""
    if "crps_by_lead_time" not in scores:
        return []
    path = lead_time_figure(Path(out_dir) / "scores_by_lead_time.png", scores)
    return [("Skill by lead time", [(path, "CRPS and MAE of every model per forecast lead time, over the "
                                     f"{int(scores['times_by_lead_time'].min())}+ valid times of each lead.")])]
