"""What each score is: the one table of scores (`SCORES`) that the scores file, the score table, the report and
the grouping by lead time read.

Per score: its long name in the scores file, its column in the score table (title and the meaning shown beside
it), its units (the variable's, or dimensionless) and how the scores of the times of one lead time are pooled.
Scores `FROM_SUMS` are ratios of per-time sums (`corrdiff.evaluation.metrics.scores_from_sums`), so they exist
per time and over all times; scores `FROM_DISTRIBUTIONS` compare spectra and histograms over sampled times
(`corrdiff.evaluation.spectra.summarise`); scores `FROM_SERIES` are of what a forecast does from one time to the
next, over series of consecutive times (`corrdiff.evaluation.time_scores`). A new score is its row here and its
computation there.
"""

from dataclasses import dataclass

PER_VARIABLE = "units of the variable"  # the `units` of a score in its variable's units (made CF by `scores_cf`)
DIMENSIONLESS = "1"

FROM_SUMS = "sums"
FROM_DISTRIBUTIONS = "distributions"
FROM_SERIES = "series"  # consecutive times: pairs (t, t + k) of one series (`time_scores`)

# How a lead time's score pools the per-time scores of its times (equal weight per time):
MEAN = "mean"  # the mean of the per-time values
ROOT_MEAN_SQUARE = "root mean square"  # the root of the mean of their squares
SPREAD_SKILL = "spread/skill"  # sqrt((M+1)/M) · pooled spread / pooled RMSE, as over all times


@dataclass(frozen=True)
class Score:
    """One score as the files, tables and report describe it."""

    long_name: str
    """The `long_name` of the score in the scores file (", over all times" or ", per time" appended there)."""
    title: str | None
    """Its column title in the score table; None: not a column."""
    explanation: str | None
    """The meaning of its column (the table's tooltips, the report's legend)."""
    units: str
    """PER_VARIABLE or DIMENSIONLESS."""
    source: str
    """FROM_SUMS, FROM_DISTRIBUTIONS or FROM_SERIES."""
    lead_time: str | None = None
    """How it pools over the times of a lead time: MEAN, ROOT_MEAN_SQUARE, SPREAD_SKILL, or None (not by lead time)."""
    of_truth: bool = False
    """Whether truth has a value of its own (`truth_<name>` (variable,) in the scores file, a "truth" row in the
    table) to compare the models' with; False for scores that compare a model with truth."""

    def attrs(self, suffix: str = "") -> dict[str, str]:
        """The attributes of its array in the scores file."""
        return {"long_name": self.long_name + suffix, "units": self.units}


SCORES = {
    "mae": Score("mean absolute error of the ensemble mean", "MAE",
                 "mean absolute error of the ensemble mean (of the field itself for one member)",
                 PER_VARIABLE, FROM_SUMS, MEAN),
    "rmse": Score("root-mean-square error of the ensemble mean", "RMSE", "root-mean-square error of the ensemble mean",
                  PER_VARIABLE, FROM_SUMS, ROOT_MEAN_SQUARE),
    "bias": Score("mean of ensemble mean minus truth", "bias", "mean of forecast minus truth", PER_VARIABLE,
                  FROM_SUMS, MEAN),
    "crps": Score("continuous ranked probability score of the ensemble (empirical distribution)", "CRPS",
                  "continuous ranked probability score of the members (the paper's); equals MAE for one member; "
                  "lower is better; favours ensembles narrower than calibrated", PER_VARIABLE, FROM_SUMS, MEAN),
    "crps_fair": Score("fair (unbiased) continuous ranked probability score of the ensemble (Ferro 2014)", "fair CRPS",
                       "unbiased CRPS estimator over pairs of distinct members (Ferro 2014): what the score would be "
                       "with infinitely many members; lowest at the calibrated spread; corrdiff decides with it",
                       PER_VARIABLE, FROM_SUMS),
    "spread": Score("root of the mean ensemble variance (ddof=1)", None, None, PER_VARIABLE, FROM_SUMS,
                    ROOT_MEAN_SQUARE),
    "spread_skill": Score("sqrt((M+1)/M) * spread / rmse; 1 for a calibrated ensemble", "spread/skill",
                          "sqrt((M+1)/M)·spread / RMSE; 1 for a calibrated ensemble, < 1 over-confident",
                          DIMENSIONLESS, FROM_SUMS, SPREAD_SKILL),
    "power_ratio_smallest_octave": Score(
        "predicted / true spectral power at wavelengths 2-4 grid spacings", "power 2-4Δ",
        "predicted / true spectral power at wavelengths of 2-4 grid spacings; 1 is ideal", DIMENSIONLESS,
        FROM_DISTRIBUTIONS),
    "log_spectral_distance": Score(
        "mean over wavenumbers up to Nyquist of |log10(predicted / true power)|, members' spectra averaged", "LSD",
        "log-spectral distance: mean over wavenumbers up to Nyquist of |log10(predicted / true power)|, members' "
        "spectra averaged; 0 is ideal, 0.1 is a factor 1.26 on average", DIMENSIONLESS, FROM_DISTRIBUTIONS),
    "wasserstein": Score("Wasserstein-1 distance between predicted and true value distributions", "W1",
                         "Wasserstein-1 distance between predicted and true value distributions", PER_VARIABLE,
                         FROM_DISTRIBUTIONS),
    "p999_difference": Score("99.9th percentile of predictions minus that of truth", "Δp99.9",
                             "99.9th percentile of the forecast minus that of the truth", PER_VARIABLE,
                             FROM_DISTRIBUTIONS),
    "residual_autocorrelation_lag1": Score(
        "lag-1 autocorrelation in time of the residual (field minus the regression mean), of each member's own "
        "series, averaged over members", "r(1)",
        "correlation of the residual (field minus the regression mean) at t and t+1 over every point and pair of "
        "consecutive times, of each member's own series, averaged over members; compare with truth's row: lower "
        "means members that flicker from one time to the next", DIMENSIONLESS, FROM_SERIES, of_truth=True),
    "residual_autocorrelation_lag2": Score(
        "lag-2 autocorrelation in time of the residual (field minus the regression mean), of each member's own "
        "series, averaged over members", "r(2)",
        "as r(1), between t and t+2 (two steps apart in one series); compare with truth's row",
        DIMENSIONLESS, FROM_SERIES, of_truth=True),
    "residual_autocorrelation_lag3": Score(
        "lag-3 autocorrelation in time of the residual (field minus the regression mean), of each member's own "
        "series, averaged over members", "r(3)",
        "as r(1), between t and t+3 (three steps apart in one series); compare with truth's row",
        DIMENSIONLESS, FROM_SERIES, of_truth=True),
    "ramp_std": Score(
        "standard deviation of the ramps x(t+1) - x(t) at every point, members pooled (per time step)", "ramp σ",
        "standard deviation of the ramps x(t+1) − x(t) at every point and pair of consecutive times, members "
        "pooled, in the variable's units per time step; compare with truth's row", PER_VARIABLE, FROM_SERIES,
        of_truth=True),
    "ramp_wasserstein": Score(
        "Wasserstein-1 distance between predicted (members pooled) and true distributions of the ramps "
        "x(t+1) - x(t)", "ramp W1",
        "Wasserstein-1 distance between the predicted (members pooled) and true distributions of the ramps "
        "x(t+1) − x(t) at a point; 0 is ideal", PER_VARIABLE, FROM_SERIES),
    "ramp_log_spectral_distance": Score(
        "log-spectral distance between predicted (members' spectra averaged) and true isotropic spectra of the "
        "ramps x(t+1) - x(t)", "ramp LSD",
        "log-spectral distance (as LSD) between the isotropic spatial spectra of the ramps x(t+1) − x(t), "
        "members' averaged, and truth's; 0 is ideal", DIMENSIONLESS, FROM_SERIES),
}
"""Every score by its name in the scores file, in the order of the score table's columns."""


def named(source: str | None = None, lead_time: str | None = None) -> list[str]:
    """The names of the scores (in table order) computed from `source` and pooled by `lead_time`, when given."""
    return [name for name, score in SCORES.items()
            if (source is None or score.source == source) and (lead_time is None or score.lead_time == lead_time)]


def table_columns() -> dict[str, Score]:
    """The score table's columns by score name, in order."""
    return {name: score for name, score in SCORES.items() if score.title}


def dimensionless_titles(sources=None) -> str:
    """The titles of the dimensionless columns (of scores from `sources`, default: every source), as prose:
    "spread/skill, power 2-4Δ and LSD"."""
    titles = [score.title for score in table_columns().values()
              if score.units == DIMENSIONLESS and (sources is None or score.source in sources)]
    return " and ".join([", ".join(titles[:-1]), titles[-1]]) if len(titles) > 1 else "".join(titles)
