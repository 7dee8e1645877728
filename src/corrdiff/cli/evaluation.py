"""`corrdiff score`, `corrdiff report` and `corrdiff baseline interp|rf`: parse, call the library, print.

The main CLI registers `score_command` and `report_command` as `score` and `report`, and adds
`baseline_app` as `baseline`.
"""

from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors

baseline_app = typer.Typer(help="Baselines written in the same NetCDF layout as `corrdiff generate`.",
                           no_args_is_help=True)

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
SpectraTimesOpt = Annotated[int, typer.Option(help="Times (evenly spaced) used for spectra and distributions; "
                            "0 = all.")]
SpecArg = Annotated[Path, typer.Argument(help="Dataset spec (YAML).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output file: NetCDF (.nc) or Zarr (.zarr).")]
BaselineSplitOpt = Annotated[str, typer.Option(help="Split whose times are predicted.")]


def _print_scores(result) -> None:
    from rich.console import Console

    from corrdiff.evaluation.tables import rich_tables

    console = Console()
    times = result.scores.sizes["time"]
    for table in rich_tables(result.scores, title=f"scores over {times} time{'s' if times != 1 else ''}"):
        console.print(table)
    for note in result.evaluation.notes:
        console.print(f"note: {note}", style="yellow")


@user_errors
def score_command(
    predictions: PredictionsArg,
    truth: TruthOpt,
    baseline: BaselineOpt = None,
    split: SplitOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the scores as tidy NetCDF.")] = None,
    variable: VariableOpt = None,
    interp: InterpOpt = None,
    spectra: Annotated[bool, typer.Option("--spectra/--no-spectra", help="Also compare power spectra and value "
                       "distributions (power ratio, W1, Δp99.9).")] = True,
    spectra_times: SpectraTimesOpt = 16,
) -> None:
    """Score an ensemble against truth, beside the regression mean and the baselines: MAE, RMSE and bias of
    the ensemble mean, CRPS, spread–skill, rank histograms, spectra and distribution distances.

    Per variable, per time and over all times; only the times every input has (and generation finished) count.
    """
    from corrdiff.evaluation.evaluate import evaluate, write_scores

    result = evaluate(predictions, truth, baseline, split=split, variables=variable, interp=interp,
                      distributions=spectra, spectra_times=spectra_times)
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the figures, scores.nc and index.html.")],
    baseline: BaselineOpt = None,
    split: SplitOpt = None,
    time: Annotated[str | None, typer.Option("--time", help="Time of the maps (ISO, nearest scored time); "
                    "default: the middle scored time.")] = None,
    variable: VariableOpt = None,
    interp: InterpOpt = None,
    spectra_times: SpectraTimesOpt = 16,
) -> None:
    """Write a report: maps (truth, baselines, two members, ensemble std), spectra, PDFs, rank histograms,
    spread–skill and CRPS over time as PNGs, and index.html with the score table; also DIR/scores.nc."""
    from corrdiff.evaluation.evaluate import evaluate, write_scores
    from corrdiff.evaluation.report import write_report

    result = evaluate(predictions, truth, baseline, split=split, variables=variable, interp=interp,
                      spectra_times=spectra_times)
    try:
        _print_scores(result)
        write_scores(result.scores, Path(out) / "scores.nc")
        page = write_report(result.evaluation, result.scores, result.distributions, out, when=time)
    finally:
        result.evaluation.close()
    typer.echo(f"report written: {page}")


@baseline_app.command("interp")
@user_errors
def interp_command(spec: SpecArg, out: OutOpt, split: BaselineSplitOpt = "test") -> None:
    """Bilinear interpolation of the coarse input to the fine grid, for target variables that are inputs."""
    from corrdiff.evaluation.baselines import interpolation_baseline

    typer.echo(f"interpolation baseline written: {interpolation_baseline(spec, out, split)}")


@baseline_app.command("rf")
@user_errors
def rf_command(
    spec: SpecArg,
    out: OutOpt,
    split: BaselineSplitOpt = "test",
    samples: Annotated[int, typer.Option(help="(time, pixel) points of the train split to fit on.")] = 50_000,
    trees: Annotated[int, typer.Option(help="Trees in the forest.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the subsample and the forest.")] = 0,
    jobs: Annotated[int, typer.Option(help="CPU cores for fitting and predicting.")] = 1,
) -> None:
    """Per-pixel random forest (scikit-learn) on the interpolated inputs, static fields and position, fitted
    on a random subsample of the train split, predicting every pixel of the split."""
    from corrdiff.evaluation.baselines import random_forest_baseline

    path = random_forest_baseline(spec, out, split, samples=samples, trees=trees, seed=seed, jobs=jobs)
    typer.echo(f"random-forest baseline written: {path}")
