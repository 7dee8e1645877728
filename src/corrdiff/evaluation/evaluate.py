"""The evaluation as one call: open and align, score, compare spectra and distributions, write.

`corrdiff score`, `corrdiff report` and `corrdiff demo` (`corrdiff.demo.evaluate_demo`) are thin layers
over `evaluate`, `write_scores` and `write_report`. `check_scores_output` and `evaluation_inputs` are
what the commands check before they start (see `corrdiff.output_paths`).
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import xarray as xr
from tqdm.dask import TqdmCallback

from corrdiff.data import load_spec
from corrdiff.errors import DataError
from corrdiff.evaluation.lead_time import add_lead_time_scores
from corrdiff.evaluation.metrics import nan_notes, score_models, TITLE
from corrdiff.evaluation.scores_cf import cf_scores
from corrdiff.evaluation.spectra import compare_distributions, Distributions
from corrdiff.evaluation.stores import collect, Evaluation, is_spec, parse_baselines
from corrdiff.evaluation.time_scores import score_in_time, why_absent
from corrdiff.failed_writes import is_write_error, write_failed
from corrdiff.file_integrity import atomic_file
from corrdiff.output_paths import check_output, spec_files

SPECTRA_TIMES = 16  # spectra and histograms from this many evenly spaced times: enough for smooth curves
SCORES_KIND = "a corrdiff scores file"


@dataclass
class Result:
    """Aligned inputs, the scores (model, variable[, time | rank]) and, unless skipped, the distributions."""

    evaluation: Evaluation
    scores: xr.Dataset
    distributions: Distributions | None
    seconds: float


def progress_bar(desc: str, progress: bool):
    """A tqdm bar (on stderr) over the tasks of every dask computation in its block; nothing when not `progress`."""
    return TqdmCallback(desc=desc, leave=False) if progress else contextlib.nullcontext()


def evaluate(predictions, truth, baselines=None, split: str | None = None, variables=None,
             interp: bool | None = None, distributions: bool = True, spectra_times: int = SPECTRA_TIMES,
             seed: int = 0, workers: int | None = None, spectra: str = "2d", progress: bool = False,
             same_grid: bool = False) -> Result:
    """Score `predictions` (generate's layout) against `truth` (a dataset spec or a store) beside the
    regression mean, the interpolation baseline (when truth is a spec) and `baselines` ({name: path} or
    NAME=FILE strings). Lazy over time: memory is bounded by a few dask chunks per worker thread.

    `spectra`: "2d" (isotropic, windowed) or "1d" (along x, unwindowed) spectra; `progress`: bars on stderr.
    `same_grid`: a file without lat/lon is on truth's grid points (else it is refused: `stores.collect`).
    NaN/inf values are counted and noted; a forecast or truth with no finite value is an EvaluationError.
    The scores of time (`time_scores`) are added when two scored times are consecutive; else one log line
    says why there are none.
    """
    start = time.perf_counter()
    evaluation = collect(predictions, truth, baselines, split=split, interp=interp, variables=variables,
                         same_grid=same_grid)
    with dask.config.set(scheduler="threads", num_workers=workers):
        with progress_bar("scoring", progress):
            scores = score_models(evaluation, seed=seed)
        evaluation.notes += nan_notes(scores)
        scores = add_lead_time_scores(scores, evaluation)  # grouped by lead time when made from forecasts
        with progress_bar("spectra and distributions", progress):
            found = compare_distributions(evaluation, spectra_times, scores=scores, kind=spectra) \
                if distributions else None
        with progress_bar("scores of time", progress):
            in_time = score_in_time(evaluation, scores, spectra_times, distributions)
    if found is not None:
        scores = scores.merge(found.summary)
        for key in ("summary_times", "spectra", "spectra_method"):
            scores.attrs[key] = found.summary.attrs[key]
    if in_time is None:
        logging.getLogger("corrdiff").info(why_absent(evaluation.truth.sizes["time"]))
    else:
        scores = scores.merge(in_time)
        scores.attrs.update(in_time.attrs)
    scores.attrs["notes"] = "; ".join(evaluation.notes)
    return Result(evaluation, scores, found, time.perf_counter() - start)


def write_scores(scores: xr.Dataset, out) -> Path:
    """Write the scores as NetCDF (whole or not at all); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(out) as tmp:
            cf_scores(scores).to_netcdf(tmp)
    except BaseException as err:  # a full disk (OSError, or netCDF's RuntimeError), an interrupt: no half file
        if is_write_error(err):
            raise write_failed(out, err, "writing the scores") from None
        raise
    return out


def is_scores_file(path: Path) -> bool:
    """Whether `path` is a NetCDF file written by `write_scores` (its title attribute says so)."""
    if not Path(path).is_file():
        return False
    try:
        with xr.open_dataset(path) as ds:
            return ds.attrs.get("title") == TITLE
    except (OSError, ValueError):
        return False


def evaluation_inputs(predictions, truth, baselines=None) -> dict[str, list[Path]]:
    """The files `evaluate` reads, by role: predictions, truth (a spec: the spec and its stores), baselines."""
    inputs = {"the predictions": [Path(predictions)], "the truth": [Path(truth)]}
    if is_spec(truth):
        try:
            inputs["a store of the truth spec"] = spec_files(load_spec(truth))
        except DataError:
            pass  # a broken spec: `evaluate` says what is wrong with it
    named = parse_baselines(baselines) if not isinstance(baselines, dict) else baselines
    inputs["the baseline"] = [Path(p) for p in named.values()]
    return inputs


def check_scores_output(out, inputs: dict[str, list[Path]], overwrite: bool, option: str = "--out") -> Path:
    """Refuse a scores path that is an input, or that exists unless `overwrite` and it is a scores file."""
    return check_output(out, inputs, SCORES_KIND, is_scores_file, overwrite, option)
