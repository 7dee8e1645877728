"""Evaluation of downscaled ensembles against truth: scores, baselines, spectra, distributions and reports.

    collect(predictions, truth, ...) -> Evaluation      open and align forecasts and truth (stores.py)
    score_models(evaluation) -> xr.Dataset              MAE, RMSE, bias, CRPS, spread-skill, ranks (metrics.py)
    compare_distributions(evaluation) -> Distributions  spectra, histograms, summary numbers (spectra.py)
    score_in_time(evaluation) -> xr.Dataset | None      scores of time: autocorrelation, ramps (time_scores.py)
    evaluate(predictions, truth, ...) -> Result         all of the above in one call (evaluate.py)
    trust.flags(scores) -> [Flag]                       when an ensemble cannot be trusted, and what to try (trust.py)
    write_report(evaluation, scores, distributions, out_dir) -> index.html  (report.py, plots.py)
    interpolation_baseline / random_forest_baseline     baselines in generate's layout (baselines.py)
    check_scores_output / check_report_folder / check_baseline_output
                                                        where the commands may write (`corrdiff.output_paths`)

The file layout they read and write is `corrdiff.ensemble_file`'s.
"""

from corrdiff.errors import EvaluationError
from corrdiff.evaluation.baselines import interpolation_baseline, random_forest_baseline
from corrdiff.evaluation.evaluate import evaluate, Result, write_scores
from corrdiff.evaluation.metrics import crps_ensemble, score_models
from corrdiff.evaluation.report import write_report
from corrdiff.evaluation.spectra import compare_distributions, Distributions, isotropic_power
from corrdiff.evaluation.stores import collect, Evaluation
from corrdiff.evaluation.tables import rich_tables, text_table

__all__ = ["collect", "compare_distributions", "crps_ensemble", "Distributions", "evaluate", "Evaluation",
           "EvaluationError", "interpolation_baseline", "isotropic_power", "random_forest_baseline", "Result",
           "rich_tables", "score_models", "text_table", "write_report", "write_scores"]
