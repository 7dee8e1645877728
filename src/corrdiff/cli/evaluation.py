"""`corrdiff score`, `corrdiff report` and `corrdiff baseline interp|rf`: parse, call the library, print.

The main CLI registers `score_command` and `report_command` as `score` and `report`, and adds
`baseline_app` as `baseline`. Every command checks its output before the work starts: never one of its
inputs, and an existing output only with --overwrite and only of its own kind (`corrdiff.output_paths`).
"""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors

baseline_app = typer.Typer(help="Baselines written in the same NetCDF layout as `corrdiff generate`.",
                           no_args_is_help=True)


class Spectra(str, Enum):
    two_d = "2d"
    one_d = "1d"
    none = "none"


PredictionsArg = Annotated[Path, typer.Argument(help="Ensemble written by `corrdiff generate` (NetCDF or Zarr).")]
TruthOpt = Annotated[Path, typer.Option("--truth", "-t", help="Truth: the dataset spec (YAML; adds the interpolation "
                                        "baseline) or a NetCDF/Zarr store with (time, y, x) variables.")]
BaselineOpt = Annotated[list[str] | None, typer.Option("--baseline", "-b", help="Another forecast to score beside "
                        "CorrDiff, as NAME=FILE (e.g. rf=rf.nc, from `corrdiff baseline rf`). Repeatable.")]
SplitOpt = Annotated[str | None, typer.Option(help="With a spec as truth: read only this split (e.g. test); "
                     "default: every time, and the predictions choose which are scored.")]
VariableOpt = Annotated[list[str] | None, typer.Option("--variable", help="Score only this variable (repeatable); "
                        "default: every predicted variable, which truth must have.")]
InterpOpt = Annotated[bool | None, typer.Option("--interp/--no-interp", help="Score the bilinear-interpolation "
                      "baseline (needs a spec as truth); default: when truth is a spec.")]
SpectraTimesOpt = Annotated[int, typer.Option(min=0, help="Times (evenly spaced) used for spectra and distributions; "
                            "0 = all.")]
SpectraOpt = Annotated[Spectra, typer.Option("--spectra", help="Power spectra: 2d = isotropic, mean removed, Hann "
                       "window; 1d = along x per row, unwindowed, averaged over rows (the convention of the "
                       "CorrDiff paper's figures); none = skip spectra and distributions (score only).")]
SameGridOpt = Annotated[bool, typer.Option("--same-grid", help="A forecast or truth file without lat/lon is on "
                        "the other's grid points, in the same order (without it, such a file is refused: it cannot "
                        "be placed).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output of this command "
                         "(never an input, never a file of another kind).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
SpecArg = Annotated[Path, typer.Argument(help="Dataset spec (YAML).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output file: NetCDF (.nc) or Zarr (.zarr).")]
BaselineSplitOpt = Annotated[str, typer.Option(help="Split whose times are predicted.")]


def _print_scores(result) -> None:
    from rich.console import Console

    from corrdiff.evaluation.lead_time import lead_time_tables
    from corrdiff.evaluation.tables import rich_tables
    from corrdiff.evaluation.trust import flags, warning_lines

    console = Console()
    times = result.scores.sizes["time"]
    for table in rich_tables(result.scores, title=f"scores over {times} time{'s' if times != 1 else ''}"):
        console.print(table)
    for table in lead_time_tables(result.scores):  # forecasts only: CRPS and MAE by lead time
        console.print(table)
    if "spectra" in result.scores.attrs:
        console.print(f"spectra: {result.scores.attrs['spectra_method']}", style="dim")
    for note in result.evaluation.notes:
        console.print(f"note: {note}", style="yellow", markup=False)
    for line in warning_lines(flags(result.scores)):  # the scores are still the result: the exit code stays 0
        console.print(line, style="bold red", markup=False, highlight=False)


@user_errors
def score_command(
    predictions: PredictionsArg,
    truth: TruthOpt,
    baseline: BaselineOpt = None,
    split: SplitOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the scores as tidy NetCDF.")] = None,
    variable: VariableOpt = None,
    interp: InterpOpt = None,
    spectra: SpectraOpt = Spectra.two_d,
    no_spectra: Annotated[bool, typer.Option("--no-spectra", hidden=True, help="Same as --spectra none.")] = False,
    spectra_times: SpectraTimesOpt = 16,
    same_grid: SameGridOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score an ensemble against truth, beside the regression mean and the baselines: MAE, RMSE and bias of
    the ensemble mean, CRPS, spread–skill, rank histograms, spectra and distribution distances; over consecutive
    times, the scores of time (autocorrelation of the residual, the ramps' σ, W1 and spectra).

    Per variable, per time and over all times; only the times every input has (and generation finished) count.
    NaN/inf values are left out and counted (a note per model and variable, `nan_*` in the scores file).
    """
    from corrdiff.evaluation.evaluate import check_scores_output, evaluate, evaluation_inputs, write_scores

    if out is not None:
        check_scores_output(out, evaluation_inputs(predictions, truth, baseline), overwrite)
    kind = "none" if no_spectra else spectra.value
    result = evaluate(predictions, truth, baseline, split=split, variables=variable, interp=interp,
                      distributions=kind != "none", spectra_times=spectra_times,
                      spectra=kind if kind != "none" else "2d", progress=not quiet, same_grid=same_grid)
    try:
        _print_scores(result)
        if out is not None:
            typer.echo(f"scores written: {write_scores(result.scores, out)}")
    finally:
        result.evaluation.close()
    typer.echo(f"scored in {result.seconds:.1f} s")


@user_errors
def report_command(
    predictions: PredictionsArg,
    truth: TruthOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the figures, scores.nc and index.html: new, "
                   "empty, or an earlier report (with --overwrite).")],
    baseline: BaselineOpt = None,
    split: SplitOpt = None,
    time: Annotated[str | None, typer.Option("--time", help="Time of the maps (ISO, nearest scored time); "
                    "default: the middle scored time.")] = None,
    variable: VariableOpt = None,
    interp: InterpOpt = None,
    spectra: Annotated[Spectra, typer.Option("--spectra", help="Power spectra shown: 2d = isotropic, windowed; "
                       "1d = along x per row, unwindowed (the CorrDiff paper's convention).")] = Spectra.two_d,
    spectra_times: SpectraTimesOpt = 16,
    same_grid: SameGridOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a report: maps (truth, baselines, two members, ensemble std), spectra, PDFs, rank histograms,
    spread–skill, CRPS over time and (consecutive times) the series at three points as PNGs, and index.html with
    the score table; also DIR/scores.nc."""
    from corrdiff.evaluation.evaluate import evaluate, evaluation_inputs, write_scores
    from corrdiff.evaluation.report import check_report_folder, write_report

    if spectra is Spectra.none:
        raise typer.BadParameter("a report shows spectra: choose 2d or 1d", param_hint="--spectra")
    check_report_folder(out, evaluation_inputs(predictions, truth, baseline), overwrite)
    result = evaluate(predictions, truth, baseline, split=split, variables=variable, interp=interp,
                      spectra_times=spectra_times, spectra=spectra.value, progress=not quiet, same_grid=same_grid)
    try:
        _print_scores(result)
        write_scores(result.scores, Path(out) / "scores.nc")
        page = write_report(result.evaluation, result.scores, result.distributions, out, when=time,
                            progress=not quiet)
    finally:
        result.evaluation.close()
    typer.echo(f"report written: {page}")


@baseline_app.command("interp")
@user_errors
def interp_command(spec: SpecArg, out: OutOpt, split: BaselineSplitOpt = "test", overwrite: OverwriteOpt = False,
                   quiet: QuietOpt = False) -> None:
    """Bilinear interpolation of the coarse input to the fine grid, for target variables that are inputs."""
    from corrdiff.evaluation.baselines import interpolation_baseline

    path = interpolation_baseline(spec, out, split, overwrite=overwrite, progress=not quiet)
    typer.echo(f"interpolation baseline written: {path}")


@baseline_app.command("rf")
@user_errors
def rf_command(
    spec: SpecArg,
    out: OutOpt,
    split: BaselineSplitOpt = "test",
    samples: Annotated[int, typer.Option(min=1, help="(time, pixel) points of the train split to fit on.")] = 50_000,
    trees: Annotated[int, typer.Option(min=1, help="Trees in each forest (one forest per target channel).")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the subsample and the forests.")] = 0,
    jobs: Annotated[int, typer.Option(help="CPU cores for fitting and predicting (-1: all).")] = 1,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Per-pixel random forests (scikit-learn), one per target channel, on the interpolated inputs, static
    fields and sinusoidal position features, fitted on a random subsample of the train split, predicting
    every pixel of the split."""
    from corrdiff.evaluation.baselines import random_forest_baseline

    if jobs == 0:  # scikit-learn gives n_jobs=0 no meaning; negative counts leave cores free (-1: all)
        raise typer.BadParameter("0 CPU cores: give 1 or more, or -1 for all", param_hint="--jobs")
    path = random_forest_baseline(spec, out, split, samples=samples, trees=trees, seed=seed, jobs=jobs,
                                  overwrite=overwrite, progress=not quiet)
    typer.echo(f"random-forest baseline written: {path}")
