"""The report: PNG figures and one `index.html` that shows them beside the score tables.

A report folder is recognised by its page (`GENERATOR` in a meta tag): `corrdiff report --overwrite` updates
such a folder and no other (`check_report_folder`).
"""

import datetime as dt
import html
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff.errors import EvaluationError
from corrdiff.evaluation import case_study, lead_time, plots, time_scores, trust
from corrdiff.evaluation.evaluate import check_scores_output
from corrdiff.evaluation.spectra import Distributions
from corrdiff.evaluation.stores import Evaluation, source_of
from corrdiff.evaluation.scores import dimensionless_titles, FROM_DISTRIBUTIONS, FROM_SERIES, FROM_SUMS
from corrdiff.evaluation.tables import explained, html_table
from corrdiff.output_paths import check_earlier_output, check_folder, check_not_an_input, empty_or_written_by
from corrdiff.progress import bar as progress_bar

GENERATOR = "corrdiff report"
REPORT_FILES = ("scores.nc", "index.html")  # and PNG figures
SPECTRA_CAPTIONS = {
    "2d": "Isotropic 2-D power spectra (time mean over the sampled times): the field's mean is removed and a "
          "2-D Hann window applied before the FFT; power is summed over rings of wavenumber.",
    "1d": "1-D power spectra along x (time mean over the sampled times): each row's mean is removed, no window "
          "is applied, and the power of the rows' FFTs is averaged over the rows.",
}
CAPTIONS = {
    "spectra": " Shaded: wavelengths of 2-4 grid spacings, the octave of the 'power 2-4Δ' ratio. LSD in the table: "
               "the mean gap between a model's curve and the truth's, in decades, over every wavenumber up to "
               "Nyquist.",
    "pdfs": "Distributions of values over the sampled times (all members), log density to show the tails.",
    "rank_histograms": "Rank of the truth among the members at every pixel and time; flat when calibrated.",
    "spread_skill": "Spread (corrected for the finite ensemble) against the RMSE of the ensemble mean, per time.",
    "scores_by_time": "CRPS of every model per time.",
}


def choose_time(truth: xr.Dataset, when: str | None) -> np.datetime64:
    """The scored time nearest `when` (ISO string), or the middle scored time; errors name the range."""
    times = truth["time"].values
    if when is None:
        return times[len(times) // 2]
    try:
        wanted = np.datetime64(when, "ns")
    except ValueError:
        raise EvaluationError(f"--time {when!r}: not an ISO time such as 2022-07-01T06") from None
    nearest = times[np.argmin(np.abs(times - wanted))]
    if abs(nearest - wanted) > np.timedelta64(1, "D"):
        raise EvaluationError(f"--time {when}: no scored time within a day; scored times are "
                              f"{str(times.min())[:16]}..{str(times.max())[:16]}")
    return nearest


def map_figures(evaluation: Evaluation, out_dir: Path, when: np.datetime64, done=lambda: None) -> list[Path]:
    """One map figure per variable at `when`: truth, each one-member model, two members, ensemble std;
    `done()` is called after each."""
    ensemble = evaluation.models["corrdiff"].sel(time=when).compute()
    truth = evaluation.truth.sel(time=when).compute()
    order = sorted(evaluation.models, key=lambda name: {"interp": 0, "regression": 1}.get(name, 2))
    deterministic = {name: evaluation.models[name].sel(time=when).isel(member=0).compute() for name in order
                     if name != "corrdiff" and evaluation.models[name].sizes["member"] == 1}
    coords = evaluation.predictions if "lat" in evaluation.predictions.coords else evaluation.truth
    lat, lon = np.asarray(coords["lat"].values), np.asarray(coords["lon"].values)
    label = f"{str(when)[:16].replace('T', ' ')} UTC"
    paths = []
    for v in evaluation.variables:
        panels = {"truth": truth[v].values}
        panels.update({name: ds[v].values for name, ds in deterministic.items() if v in ds})
        members = ensemble[v].transpose("member", "y", "x").values
        for m in range(min(2, members.shape[0])):
            panels[f"CorrDiff member {m}"] = members[m]
        std = members.std(axis=0, ddof=1) if members.shape[0] > 1 else None
        paths.append(plots.map_panels(out_dir / f"map_{v}.png", v, panels, std, lat, lon, evaluation.truth[v], label))
        done()
    return paths


def is_report_folder(path: Path) -> bool:
    """Whether `path` is a folder that `write_report` wrote (its index.html names the generator), or empty."""
    return empty_or_written_by(path, _holds_a_report)


def _holds_a_report(folder: Path) -> bool:
    page = folder / "index.html"
    try:
        return page.is_file() and f'<meta name="generator" content="{GENERATOR}">' in page.read_text(errors="replace")
    except OSError:
        return False


def check_report_folder(out_dir, inputs: dict[str, list[Path]], overwrite: bool) -> Path:
    """Refuse a report folder that is or lies inside an input, an existing folder that is not an empty or a
    corrdiff report folder, and an existing report without `overwrite`; its scores.nc likewise."""
    out_dir = Path(out_dir)
    for name in REPORT_FILES:  # the folder may hold an input (not one of these names), or lie inside one
        check_not_an_input(out_dir / name, inputs)
    check_folder(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        check_earlier_output(out_dir, "a corrdiff report folder", is_report_folder, overwrite)
        check_scores_output(out_dir / "scores.nc", inputs, overwrite=True)
    return out_dir


def write_report(evaluation: Evaluation, scores: xr.Dataset, distributions: Distributions, out_dir,
                 when: str | None = None, title: str = "corrdiff evaluation", progress: bool = False) -> Path:
    """Write the figures and `index.html` into out_dir; returns the HTML path. `progress`: a bar on stderr."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    time = choose_time(evaluation.truth, when)
    bar = progress_bar(total=len(evaluation.variables) + 5, desc="figures", unit="figure", leave=False, disable=not progress)
    figures = {"maps": map_figures(evaluation, out_dir, time, bar.update)}
    for key, draw in (
        ("spectra", lambda path: plots.spectra_figure(path, distributions.spectra, evaluation.truth,
                                                      evaluation.spacing_km)),
        ("pdfs", lambda path: plots.pdf_figure(path, distributions.histograms, evaluation.truth)),
        ("rank_histograms", lambda path: plots.rank_histogram_figure(path, scores)),
        ("spread_skill", lambda path: plots.spread_skill_figure(path, scores)),
        ("scores_by_time", lambda path: plots.scores_by_time_figure(path, scores)),
    ):
        figures[key] = [draw(out_dir / f"{key}.png")]
        bar.update()
    bar.close()
    extra = (lead_time.report_section(scores, out_dir) + time_scores.report_section(evaluation, scores, out_dir)
             + case_study.report_section(evaluation, out_dir, time))
    page = render_html(evaluation, scores, figures, title, time, distributions.spectra.attrs.get("spectra", "2d"),
                       extra)
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def render_html(evaluation: Evaluation, scores: xr.Dataset, figures: dict[str, list[Path]], title: str,
                time: np.datetime64, spectra: str = "2d", extra=()) -> str:
    """The report page: inputs, the trust warnings, score table with the meaning of each column, notes, then
    the figures; then
    the optional sections `extra` [(heading, [(figure, caption)])] (lead time, time series, vortex case)."""
    sources = [f"<li><b>{html.escape(name)}</b>: {html.escape(source_of(ds))} ({ds.sizes['member']} member"
               f"{'s' if ds.sizes['member'] > 1 else ''})</li>" for name, ds in evaluation.models.items()]
    sources.append(f"<li><b>truth</b>: {html.escape(source_of(evaluation.truth))}</li>")
    times = evaluation.truth["time"].values
    legend = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in explained(scores).items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in evaluation.notes)
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(times)} times scored, {str(times.min())[:16]} to {str(times.max())[:16]}; grid spacing "
            f"{evaluation.spacing_km:.3g} km. Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
            f"<ul>{''.join(sources)}</ul>",
            trust_section(trust.flags(scores)),
            "<h2>Scores over all times</h2>", html_table(scores),
            f"<p class='small'>Spectra and distributions from {scores.attrs.get('summary_times', '?')} sampled "
            f"times; spectra shown: {'1-D, along x' if spectra == '1d' else '2-D isotropic'} (`--spectra "
            f"{spectra}`). Units: those of the variable, except "
            f"{dimensionless_titles((FROM_SUMS, FROM_DISTRIBUTIONS))} (dimensionless).</p>"]
    if "time_step" in scores.attrs:
        body.append(f"<p class='small'>Scores of time ({dimensionless_titles((FROM_SERIES,))} and the ramps x(t+1) − "
                    f"x(t)) from {html.escape(scores.attrs['time_series_description'])}; residual: "
                    f"{html.escape(scores.attrs['time_residual'])}; the truth row holds truth's own values. Ramps "
                    "in the variable's units per step.</p>")
    body.append(f"<dl class='small'>{legend}</dl>")
    if notes:
        body.append(f"<h3>Notes</h3><ul>{notes}</ul>")
    body.append(f"<h2>Maps at {str(time)[:16].replace('T', ' ')} UTC</h2>")
    body += [_img(p, f"{p.stem[4:]}: truth, baselines, two CorrDiff members and the ensemble standard deviation")
             for p in figures["maps"]]
    captions = CAPTIONS | {"spectra": SPECTRA_CAPTIONS[spectra] + CAPTIONS["spectra"]}
    for key, heading in (("spectra", f"Power spectra ({'1-D' if spectra == '1d' else '2-D isotropic'})"),
                         ("pdfs", "Distributions"), ("rank_histograms", "Rank histograms"),
                         ("spread_skill", "Spread–skill"), ("scores_by_time", "Scores over time")):
        body.append(f"<h2>{heading}</h2>")
        body += [_img(p, captions[key]) for p in figures[key]]
    for heading, items in extra:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body += [_img(p, caption) for p, caption in items]
    style = ("body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}"
             "table.scores{border-collapse:collapse;font-size:0.9em}"
             "table.scores td,table.scores th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}"
             "table.scores td:nth-child(-n+2){text-align:left}tr.first td{border-top:2px solid #888}"
             "table.scores td.flag{background:#fde2e1;font-weight:bold}"
             ".trust{border-left:6px solid #c0392b;background:#fdf0ef;padding:0.3em 1em;margin:1em 0}"
             ".trust.ok{border-left-color:#2e8b57;background:#eff8f2}"
             "figure{margin:1em 0}img{max-width:100%}.small{font-size:0.85em;color:#444}dt{font-weight:bold}")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f'<meta name="generator" content="{GENERATOR}">'
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def trust_section(found: list[trust.Flag]) -> str:
    """The 'Trust' box of the page: a warning per flag with what to try, or that every rule holds."""
    rules = (f"spread/skill within {trust.SPREAD_SKILL_RANGE[0]:g}–{trust.SPREAD_SKILL_RANGE[1]:g}, power at "
             f"2–4 Δx within {trust.POWER_RATIO_RANGE[0]:g}–{trust.POWER_RATIO_RANGE[1]:g}× the truth's, "
             f"log-spectral distance up to {trust.LSD_LIMIT:g}, CRPS no worse than the regression mean's MAE")
    if not found:
        return (f"<div class='trust ok'><h2>Trust</h2><p>No warning: every ensemble keeps the rules ({rules})."
                "</p></div>")
    items = "".join(f"<li><b>{html.escape(f.variable)}, {html.escape(f.model)}</b>: {html.escape(f.message)}</li>"
                    for f in found)
    return (f"<div class='trust'><h2>Trust: {len(found)} warning{'s' if len(found) > 1 else ''}</h2>"
            f"<p>Rules broken (trusted: {rules}); each warning says what to try:</p>"
            f"<ul>{items}</ul></div>")


def _img(path: Path, caption: str) -> str:
    return (f"<figure><img src='{html.escape(path.name)}' alt='{html.escape(path.stem)}'>"
            f"<figcaption class='small'>{html.escape(caption)}</figcaption></figure>")
