"""The score table: one row per (variable, model), CorrDiff first and the baselines beside it.

The same rows are rendered three ways: a rich table for the terminal, plain text for logs, HTML for the
report; their columns, with their meanings and units, are those of `corrdiff.evaluation.scores.SCORES`. Scores
that truth has too (the scores of time: its autocorrelation, its ramps' σ) get a "truth" row above the models'. A score
that breaks a trust rule (`corrdiff.evaluation.trust`) is marked: "!" after it in the terminal and in text, under
which the text lists the warnings; a highlighted cell with the warning as tooltip in HTML.
"""

import html
import io

import numpy as np
import xarray as xr

from corrdiff.evaluation import trust
from corrdiff.evaluation.scores import dimensionless_titles, FROM_DISTRIBUTIONS, FROM_SERIES, FROM_SUMS, table_columns

GROUPS = (("skill", (FROM_SUMS,)), ("spectra and distributions", (FROM_DISTRIBUTIONS,)), ("time", (FROM_SERIES,)))
"""The terminal's tables: (name, the sources of the scores in it), narrow enough for an 80-column terminal."""


def explained(scores: xr.Dataset | None = None) -> dict[str, str]:
    """The meaning of each column by its title, in order; of the columns present in `scores`, when given."""
    return {score.title: score.explanation for name, score in table_columns().items()
            if scores is None or name in scores}


def has_truth_row(scores: xr.Dataset) -> bool:
    """Whether `scores` hold a score of truth's own (`truth_<name>` of a column): the tables give truth a row."""
    return any(score.of_truth and f"truth_{name}" in scores for name, score in table_columns().items())


def rows(scores: xr.Dataset, truth: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows of formatted cells) for the columns present in `scores`; with `truth`, each variable's
    rows start with truth's own values ("truth", no members; "–" in the columns truth has no value of)."""
    present = {name: score for name, score in table_columns().items() if name in scores}
    header = ["variable", "model", "members"] + [score.title for score in present.values()]
    table = []
    for variable in scores["variable"].values:
        units = str(scores["units"].sel(variable=variable).values) if "units" in scores.coords else ""
        label = f"{variable} [{units}]" if units else str(variable)
        if truth:
            values = [float(scores[f"truth_{name}"].sel(variable=variable)) if f"truth_{name}" in scores
                      else np.nan for name in present]
            table.append([label, "truth", ""] + [_format(v) for v in values])
            label = ""
        for model in scores["model"].values:
            values = [float(scores[name].sel(model=model, variable=variable)) for name in present]
            skill = [v for v, score in zip(values, present.values()) if score.source == FROM_SUMS] or values
            if all(np.isnan(skill)):
                continue  # the model has no such variable
            members = int(scores["members"].sel(model=model)) if "members" in scores else ""
            table.append([label, str(model), str(members)] + [_format(v) for v in values])
            label = ""
    return header, table


def _format(value: float) -> str:
    """4 significant digits, exponents without padding zeros (2.5e-5, not 2.500e-05): narrow columns."""
    if not np.isfinite(value):
        return "–"
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def flagged_cells(scores: xr.Dataset) -> dict[tuple[str, str, str], list[trust.Flag]]:
    """The trust flags of `scores` by the cell they mark: (variable, model, column title)."""
    titles = {name: score.title for name, score in table_columns().items()}
    cells = {}
    for flag in trust.flags(scores):
        cells.setdefault((flag.variable, flag.model, titles.get(flag.score, "")), []).append(flag)
    return cells


def rich_tables(scores: xr.Dataset, title: str = "scores over all times") -> list:
    """The scores as rich Tables: skill (the scores from per-time sums, MAE … spread/skill) and, when computed,
    spectra and distributions; two narrow tables rather than one wide one, so that they fit an 80-column terminal.
    A flagged score (`trust`) is followed by "!"."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    marked = flagged_cells(scores)
    caption = f"(members); units: the variable's, except {dimensionless_titles((FROM_SUMS, FROM_DISTRIBUTIONS))} (1)"
    caption += "; !: a warning below" if marked else ""
    units = {str(v): str(u) for v, u in zip(scores["variable"].values, scores["units"].values)} \
        if "units" in scores.coords else {}
    tables = []
    for name, sources in GROUPS:
        titles = {score.title for score in table_columns().values() if score.source in sources}
        truth = FROM_SERIES in sources and has_truth_row(scores)
        header, body = rows(scores, truth)
        columns = [h for h in header[3:] if h in titles]
        if not columns:
            continue
        table = Table(title=f"{title}: {name}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                      caption=_time_caption(scores) if FROM_SERIES in sources else caption)
        table.add_column("variable", no_wrap=True)
        table.add_column("model", no_wrap=True)
        for column in columns:
            table.add_column(column, justify="right", no_wrap=True)
        previous = None
        for k, row in enumerate(body):
            variable = row[0].split(" [")[0] if row[0] else previous
            first = variable != previous
            label = variable if first else (f"[{units[variable]}]" if units.get(variable) and
                                             body[k - 1][0] else "")
            model = f"{row[1]} ({row[2]})" if row[2] not in ("", "1") else row[1]  # (members) of ensembles
            cells = [label, model] + [row[header.index(c)] + ("!" if (variable, row[1], c) in marked else "")
                                      for c in columns]
            table.add_row(*(Text(c) for c in cells), end_section=False)  # Text: "[m s-1]" is no markup
            previous = variable
        tables.append(table)
    return tables


def _time_caption(scores: xr.Dataset) -> str:
    """The time table's caption: the series, the residual and the units."""
    return (f"{scores.attrs.get('time_series_description', '')}; residual: {scores.attrs.get('time_residual', '')}; "
            f"units: the variable's per step, except {dimensionless_titles((FROM_SERIES,))} (1); truth: its own")


def text_table(scores: xr.Dataset, title: str = "scores over all times", width: int = 100) -> str:
    """The rich tables rendered as plain text (no colours), for logs and `echo`, then a warning line per trust
    flag."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    for table in rich_tables(scores, title):
        console.print(table)
    for line in trust.warning_lines(trust.flags(scores)):
        console.print(line, markup=False, highlight=False)
    return buffer.getvalue().rstrip()


def html_table(scores: xr.Dataset) -> str:
    """The scores as an HTML <table>, with the column meanings as tooltips; a flagged score (`trust`) is a
    cell of class 'flag' with its warning as tooltip."""
    header, body = rows(scores, has_truth_row(scores))
    marked = flagged_cells(scores)
    explanations = explained()
    head = "".join(f'<th title="{html.escape(explanations.get(h, h))}">{html.escape(h)}</th>' for h in header)
    lines = ["<table class='scores'>", f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    variable = None
    for row in body:
        variable = row[0].split(" [")[0] if row[0] else variable
        cells = "".join(_cell(c, marked.get((variable, row[1], title))) for c, title in zip(row, header))
        lines.append(f"<tr class='{'first' if row[0] else ''}'>{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _cell(text: str, flags: list[trust.Flag] | None) -> str:
    if not flags:
        return f"<td>{html.escape(text)}</td>"
    warning = html.escape(" ".join(flag.message for flag in flags))
    return f"<td class='flag' title=\"{warning}\">{html.escape(text)} ⚠</td>"
