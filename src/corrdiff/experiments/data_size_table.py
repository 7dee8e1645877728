"""The data-size experiment's table (fraction, model, variable) gathered from each fraction's scores.nc, written
as CSV and NetCDF, and its figure: CRPS and MAE against the number of training samples, one column per variable.
Each fraction carries the order its times were taken in and the checkpoints (pointer and step) it was scored at."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from corrdiff.errors import EvaluationError, OutputError  # noqa: E402
from corrdiff.evaluation.plots import colour_of  # noqa: E402

METRICS = ("crps", "mae", "rmse")  # over all scored times, in the units of the variable
FIGURE_METRICS = {"crps": "CRPS", "mae": "MAE"}
DPI = 80  # a small PNG for docs/figures


def _scores(folder: Path) -> tuple[xr.Dataset, dict]:
    """The fraction's scores (model, variable) and its done.json record."""
    try:
        done = json.loads((folder / "done.json").read_text())
        with xr.open_dataset(folder / "scores.nc") as scores:
            return scores[list(METRICS)].load(), done
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{folder}: no complete scores ({err}); run the experiment again to finish it") from None


def data_size_table(folders: list[Path]) -> xr.Dataset:
    """crps, mae, rmse as (fraction, model, variable), with each fraction's training samples and time range.

    Models and variables are those of the first fraction's scores (corrdiff, regression, interp)."""
    scores, records = zip(*(_scores(Path(f)) for f in folders))
    models, variables = list(scores[0]["model"].values), list(scores[0]["variable"].values)
    data = {
        k: (("fraction", "model", "variable"),
            np.stack([s[k].sel(model=models, variable=variables).values for s in scores]),
            {"long_name": scores[0][k].attrs.get("long_name", k), "comment": "in the units of each variable: see "
             "the coordinate `units`"})
        for k in METRICS
    }
    units = scores[0]["units"].values if "units" in scores[0].coords else [""] * len(variables)
    fractions = [r["fraction"] for r in records]
    scored = {kind: [r.get("scored", {}).get(kind, {}) for r in records] for kind in ("regression", "diffusion")}
    table = xr.Dataset(data, coords={
        "fraction": ("fraction", fractions, {"long_name": "fraction of the training split"}),
        "order": ("fraction", [r.get("order", "contiguous") for r in records],
                  {"long_name": "how the fraction's times were taken: contiguous (the first) or spread (evenly)"}),
        "train_samples": ("fraction", [r["train_samples"] for r in records],
                          {"long_name": "training times (samples) the models saw"}),
        "train_start": ("fraction", [r["train_start"] for r in records]),
        "train_end": ("fraction", [r["train_end"] for r in records]),
        **{f"{kind}_checkpoint": ("fraction", [s.get("pointer", "latest") for s in scored[kind]],
                                  {"long_name": f"the {kind} checkpoint scored (latest: recorded before the best "
                                                "was scored)"}) for kind in scored},
        **{f"{kind}_step": ("fraction", [int(s.get("step", records[i][f"{kind}_steps"]))
                                         for i, s in enumerate(scored[kind])],
                            {"long_name": f"training step of the {kind} checkpoint scored"}) for kind in scored},
        "model": models, "variable": variables, "units": ("variable", [str(u) for u in units]),
    })
    table.attrs.update({
        "title": "corrdiff data-size experiment: scores against the number of training samples",
        "regression_steps": records[0]["regression_steps"], "diffusion_steps": records[0]["diffusion_steps"],
        "comment": "every fraction trained for the same optimisation steps and batch size, from the same seed, and "
                   "scored at its best validation checkpoints (regression_checkpoint, diffusion_checkpoint: the "
                   "pointer, *_step: the step)",
    })
    return table


def write_table(table: xr.Dataset, stem: Path) -> dict[str, Path]:
    """`stem.csv` (one row per fraction, model and variable) and `stem.nc`; returns their paths."""
    stem = Path(stem)
    scored = ("order", "regression_checkpoint", "regression_step", "diffusion_checkpoint", "diffusion_step")
    rows = ["fraction,train_samples," + ",".join(scored) + ",model,variable,units," + ",".join(METRICS)]
    for i, fraction in enumerate(table["fraction"].values):
        which = ",".join(str(table[k].values[i]) for k in scored)
        for model in table["model"].values:
            for j, variable in enumerate(table["variable"].values):
                values = ",".join(f"{float(table[k].values[i, list(table['model'].values).index(model), j]):.6g}"
                                  for k in METRICS)
                rows.append(f"{fraction:g},{int(table['train_samples'].values[i])},{which},{model},{variable},"
                            f"{table['units'].values[j]},{values}")
    paths = {"csv": stem.with_suffix(".csv"), "netcdf": stem.with_suffix(".nc")}
    try:
        paths["csv"].write_text("\n".join(rows) + "\n")
        encoded = table.copy()
        for name in ("model", "variable", "units", "train_start", "train_end", "order", "regression_checkpoint",
                     "diffusion_checkpoint"):
            encoded[name].encoding["dtype"] = "S1"
        encoded.to_netcdf(paths["netcdf"])
    except OSError as err:
        raise OutputError(f"cannot write the data-size table next to {stem}: {err}") from None
    return paths


def data_size_figure(table: xr.Dataset, path: Path, models=("corrdiff", "regression")) -> Path:
    """CRPS and MAE (rows) of `models` against training samples (log axis), one column per variable. The
    interpolation baseline does not depend on the training data: it is in the table, not drawn (its larger
    errors would flatten the differences between fractions)."""
    variables = list(table["variable"].values)
    fig, axes = plt.subplots(len(FIGURE_METRICS), len(variables), figsize=(2.6 * len(variables) + 0.6, 4.6),
                             squeeze=False, constrained_layout=True)
    samples = table["train_samples"].values
    names = list(table["model"].values)
    for row, (metric, label) in enumerate(FIGURE_METRICS.items()):
        for col, variable in enumerate(variables):
            ax = axes[row, col]
            for i, model in enumerate(names):
                values = table[metric].sel(model=model, variable=variable).values
                if model in models:
                    ax.plot(samples, values, "o-", color=colour_of(model, i), label=model, lw=1.5, ms=4)
            ax.set_xscale("log", base=2)
            ax.set_xticks(samples, [str(int(s)) for s in samples], fontsize=7)
            ax.minorticks_off()
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
            ax.yaxis.get_offset_text().set_fontsize(7)
            units = str(table["units"].values[col])
            if row == 0:
                ax.set_title(variable, fontsize=9)
            ax.set_ylabel(f"{label} ({units})" if units else label, fontsize=8)
            if row == len(FIGURE_METRICS) - 1:
                ax.set_xlabel("training samples", fontsize=8)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle("scores against training data (same steps for every fraction)", fontsize=9)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)
