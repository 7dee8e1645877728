"""The score table: one row per (variable, model), CorrDiff first and the baselines beside it.

The same rows are rendered three ways: a rich table for the terminal, plain text for logs, HTML for the
report.
"""

import html
import io

import numpy as np
import xarray as xr

# (column title, variable in the scores Dataset, unit: "var" = the variable's units, "1" = dimensionless)
COLUMNS = [
    ("MAE", "mae", "var"),
    ("RMSE", "rmse", "var"),
    ("bias", "bias", "var"),
    ("CRPS", "crps", "var"),
    ("spread/skill", "spread_skill", "1"),
    ("power 2-4Δ", "power_ratio_smallest_octave", "1"),
    ("W1", "wasserstein", "var"),
    ("Δp99.9", "p999_difference", "var"),
]
EXPLANATIONS = {
    "MAE": "mean absolute error of the ensemble mean (of the field itself for one member)",
    "RMSE": "root-mean-square error of the ensemble mean",
    "bias": "mean of forecast minus truth",
    "CRPS": "continuous ranked probability score; equals MAE for one member; lower is better",
    "spread/skill": "sqrt((M+1)/M)·spread / RMSE; 1 for a calibrated ensemble, < 1 over-confident",
    "power 2-4Δ": "predicted / true spectral power at wavelengths of 2-4 grid spacings; 1 is ideal",
    "W1": "Wasserstein-1 distance between predicted and true value distributions",
    "Δp99.9": "99.9th percentile of the forecast minus that of the truth",
}


def rows(scores: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """(header, rows of formatted cells) for the columns present in `scores`."""
    columns = [c for c in COLUMNS if c[1] in scores]
    header = ["variable", "model", "members"] + [title for title, _, _ in columns]
    table = []
    for variable in scores["variable"].values:
        units = str(scores["units"].sel(variable=variable).values) if "units" in scores.coords else ""
        label = f"{variable} [{units}]" if units else str(variable)
        for model in scores["model"].values:
            values = [float(scores[name].sel(model=model, variable=variable)) for _, name, _ in columns]
            if all(np.isnan(values[:4])):
                continue  # the model has no such variable
            members = int(scores["members"].sel(model=model)) if "members" in scores else ""
            table.append([label, str(model), str(members)] + [_format(v) for v in values])
            label = ""
    return header, table


def _format(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.4g}"


def rich_table(scores: xr.Dataset, title: str = "scores over all times"):
    """A rich Table of the scores."""
    from rich.table import Table

    header, body = rows(scores)
    table = Table(title=title, caption="units: those of the variable, except spread/skill and power (ratios)")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for row in body:
        table.add_row(*row, end_section=False)
    return table


def text_table(scores: xr.Dataset, title: str = "scores over all times", width: int = 140) -> str:
    """The rich table rendered as plain text (no colours), for logs and `echo`."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(rich_table(scores, title))
    return buffer.getvalue().rstrip()


def html_table(scores: xr.Dataset) -> str:
    """The scores as an HTML <table>, with the column meanings as tooltips."""
    header, body = rows(scores)
    head = "".join(f'<th title="{html.escape(EXPLANATIONS.get(h, h))}">{html.escape(h)}</th>' for h in header)
    lines = ["<table class='scores'>", f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    for row in body:
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        lines.append(f"<tr class='{'first' if row[0] else ''}'>{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)
