"""The evaluation as one call: open and align, score, compare spectra and distributions, write.

`corrdiff score`, `corrdiff report` and `corrdiff demo` (`corrdiff.demo.evaluate_demo`) are thin layers
over `evaluate`, `write_scores` and `write_report`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import dask
import xarray as xr

from corrdiff.errors import EvaluationError
from corrdiff.evaluation.metrics import score_models
from corrdiff.evaluation.spectra import compare_distributions, Distributions
from corrdiff.evaluation.stores import collect, Evaluation

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
