"""The evaluation as one call: open and align, score, compare spectra and distributions, write.

`corrdiff score`, `corrdiff report` and `corrdiff demo` are thin layers over `evaluate`, `write_scores`
and `write_report`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import dask
import xarray as xr

from corrdiff.evaluation.metrics import score_models
from corrdiff.evaluation.spectra import compare_distributions, Distributions
from corrdiff.evaluation.stores import collect, Evaluation, EvaluationError

SPECTRA_TIMES = 16  # spectra and histograms from this many evenly spaced times: enough for smooth curves


@dataclass
class Result:
    """Aligned inputs, the scores (model, variable[, time | rank]) and, unless skipped, the distributions."""

    evaluation: Evaluation
    scores: xr.Dataset
    distributions: Distributions | None
    seconds: float


def evaluate(predictions, truth, baselines=None, split: str | None = None, variables=None,
             interp: bool | None = None, distributions: bool = True, spectra_times: int = SPECTRA_TIMES,
             seed: int = 0, workers: int | None = None) -> Result:
    """Score `predictions` (generate's layout) against `truth` (a dataset spec or a store) beside the
    regression mean, the interpolation baseline (when truth is a spec) and `baselines` ({name: path} or
    NAME=FILE strings). Lazy over time: memory is bounded by a few dask chunks per worker thread."""
    start = time.perf_counter()
    evaluation = collect(predictions, truth, baselines, split=split, interp=interp, variables=variables)
    with dask.config.set(scheduler="threads", num_workers=workers):
        scores = score_models(evaluation, seed=seed)
        found = compare_distributions(evaluation, spectra_times, scores=scores) if distributions else None
    if found is not None:
        scores = scores.merge(found.summary)
        scores.attrs["summary_times"] = found.summary.attrs["summary_times"]
    scores.attrs["notes"] = "; ".join(evaluation.notes)
    return Result(evaluation, scores, found, time.perf_counter() - start)


def write_scores(scores: xr.Dataset, out) -> Path:
    """Write the scores as NetCDF (whole or not at all); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        scores.to_netcdf(tmp)
    except OSError as err:
        raise EvaluationError(f"{out}: cannot write the scores ({err})") from None
    tmp.replace(out)
    return out


def demo_evaluation(spec_path, ensemble_path, out_dir, echo=print) -> dict[str, Path]:
    """Score the demo ensemble against truth beside interpolation and the regression mean; print the table
    with `echo`, write `out_dir/scores.nc` and the report in `out_dir/report/`; returns their paths."""
    from corrdiff.evaluation.report import write_report
    from corrdiff.evaluation.tables import text_table

    out_dir = Path(out_dir)
    result = evaluate(ensemble_path, spec_path, spectra_times=32)
    try:
        echo(text_table(result.scores, title=f"demo scores over {result.scores.sizes['time']} test times"))
        for note in result.evaluation.notes:
            echo(f"note: {note}")
        scores = write_scores(result.scores, out_dir / "scores.nc")
        report = write_report(result.evaluation, result.scores, result.distributions, out_dir / "report",
                              title="corrdiff demo: evaluation")
    finally:
        result.evaluation.close()  # a rerun of the demo in this process appends to the same ensemble file
    return {"scores": scores, "report": report}
