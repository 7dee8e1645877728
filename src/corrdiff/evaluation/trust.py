"""When an ensemble cannot be trusted: rules on its scores, each broken rule a flag in plain words that says
what to try.

The rules, on the scores over all times of every ensemble (more than one member), per variable:

    spread/skill (fair, `metrics.scores_from_sums`)   outside 0.7–1.3: under- (below) or over-dispersed (above)
    power at 2–4 Δx, members' / truth's                below 0.5: too smooth; above 2: noisy small scales
    log-spectral distance                              above 0.5: the spectrum is off at many scales
    fair CRPS (the usual CRPS without it)              above the regression mean's MAE (its CRPS as one member)

A value on a threshold passes; a missing or NaN value raises no flag. `corrdiff score`, `report` and `tune`
show the flags beside their tables; flags never change an exit code: the scores are still the result.
`flags` reads a scores Dataset (`metrics.score_models` + `spectra.summarise`), `setting_flags` a row of
`corrdiff tune`'s table; both go through `check`, which holds the rules. What a flag says to try is ADVICE's,
or TUNE_ADVICE's after `corrdiff tune` (which has already tried the sampler settings it was given).
"""

from dataclasses import dataclass

import numpy as np
import xarray as xr

SPREAD_SKILL_RANGE = (0.7, 1.3)  # fair spread/skill; 1 is calibrated
POWER_RATIO_RANGE = (0.5, 2.0)  # members' / truth's power at wavelengths of 2-4 grid spacings; 1 is ideal
LSD_LIMIT = 0.5  # log-spectral distance, log10 units: a factor 10**0.5 ≈ 3.2 off on average
REFERENCE = "regression"  # the model whose MAE an ensemble's CRPS must beat

SHORT = {"under-dispersed": "under", "over-dispersed": "over", "too smooth": "smooth", "noisy small scales": "noisy",
         "spectrum off": "LSD", "worse than regression": "CRPS"}  # each kind in a narrow table column
TRAIN = "train the diffusion model longer"
ADVICE = {  # what to try, after `corrdiff score` or `report`
    "under-dispersed": f"run `corrdiff tune` (its calibration widens the spread), or {TRAIN}",
    "over-dispersed": f"run `corrdiff tune` (its calibration narrows the spread), or {TRAIN}: an undertrained "
                      "denoiser leaves noise in the members",
    "too smooth": f"run `corrdiff tune` (more steps, a smaller σ_min), or {TRAIN}",
    "noisy small scales": f"{TRAIN}, or run `corrdiff tune`",
    "spectrum off": f"{TRAIN}, or run `corrdiff tune`",
    "worse than regression": f"{TRAIN}, and check the checkpoint pair (the diffusion model must be trained on "
                             "this regression model's residuals)",
}
TUNE_ADVICE = ADVICE | {  # what to try, after `corrdiff tune`: it has tried the sampler settings it was given
    "under-dispersed": f"calibration (--calibrate) widens the spread only as far as CRPS does not worsen; {TRAIN}",
    "over-dispersed": f"calibration (--calibrate) narrows the spread only as far as CRPS does not worsen; {TRAIN}: "
                      "an undertrained denoiser leaves noise in the members",
    "too smooth": f"measure more steps (--nfe) or a smaller --sigma-min, or {TRAIN}",
    "noisy small scales": f"{TRAIN}, or measure more steps (--nfe) and other solvers (--solver)",
    "spectrum off": f"{TRAIN}, or measure more steps (--nfe) and other solvers (--solver)",
}


@dataclass(frozen=True)
class Flag:
    """One broken rule: which variable and model, the kind in two or three words, the scores variable and its
    value that broke it, and a sentence with the numbers and what to try."""

    variable: str
    model: str
    kind: str  # "under-dispersed", "over-dispersed", "too smooth", "noisy small scales", "spectrum off",
    #            "worse than regression"
    score: str  # the scores variable the rule reads: "spread_skill", "power_ratio_smallest_octave", ...
    value: float
    message: str

    def __str__(self) -> str:
        return f"{self.variable}, {self.model}: {self.message}"


def check(variable: str, model: str, spread_skill=None, power_ratio=None, lsd=None, crps=None,
          reference_mae=None, units: str = "", crps_name: str = "crps_fair", advice=ADVICE) -> list[Flag]:
    """The flags of one ensemble's scores of one variable; a score left out (None) or NaN is not judged.
    `crps` and `reference_mae` in `units`; `crps_name`: which CRPS `crps` is ("crps_fair" or "crps");
    `advice`: what to try, by kind (ADVICE, or TUNE_ADVICE after `corrdiff tune`)."""
    found = []

    def add(kind, score, value, finding):
        message = f"{kind}: {finding}; {advice[kind]}"
        found.append(Flag(str(variable), str(model), kind, score, float(value), message))

    low, high = SPREAD_SKILL_RANGE
    if _known(spread_skill) and not low <= spread_skill <= high:
        kind = "under-dispersed" if spread_skill < low else "over-dispersed"
        meaning = "the ensemble is over-confident" if spread_skill < low else \
            "the members scatter more than the truth does about their mean"
        add(kind, "spread_skill", spread_skill,
            f"the spread is {spread_skill:.2f}× the error of the ensemble mean (spread/skill, trusted "
            f"{low:g}–{high:g}): {meaning}")
    low, high = POWER_RATIO_RANGE
    if _known(power_ratio) and not low <= power_ratio <= high:
        share = f"members carry {power_ratio:.2g}× the truth's power at 2–4 Δx (trusted {low:g}–{high:g}×)"
        if power_ratio > high:
            add("noisy small scales", "power_ratio_smallest_octave", power_ratio,
                f"{share}: the diffusion model is undertrained or the sampler too short")
        else:
            add("too smooth", "power_ratio_smallest_octave", power_ratio,
                f"{share}: the sampler stops before the finest detail is drawn, or the diffusion model has not "
                "learnt it")
    if _known(lsd) and lsd > LSD_LIMIT:
        add("spectrum off", "log_spectral_distance", lsd,
            f"the members' power is {10 ** lsd:.2g}× above or below the truth's on average over wavenumbers "
            f"(log-spectral distance {lsd:.2f}, trusted up to {LSD_LIMIT:g}): the texture is wrong at many scales")
    if _known(crps) and _known(reference_mae) and crps > reference_mae:
        unit = f" {units}" if units and units != "1" else ""
        which = "fair CRPS" if crps_name == "crps_fair" else "CRPS"
        add("worse than regression", crps_name, crps,
            f"the ensemble's {which} {crps:.3g}{unit} is above the regression mean's MAE {reference_mae:.3g}{unit} "
            "(its CRPS as one member): the diffusion model adds noise, not skill")
    return found


def flags(scores: xr.Dataset, ensembles=None, reference: str | None = REFERENCE) -> list[Flag]:
    """The flags of a scores Dataset (model, variable): of `ensembles` (default: every model with more than
    one member, or "corrdiff" when the scores hold no member counts), CRPS against `reference`'s MAE."""
    models = [str(m) for m in scores["model"].values]
    if ensembles is None:
        ensembles = [m for m in models if int(scores["members"].sel(model=m)) > 1] if "members" in scores \
            else [m for m in models if m == "corrdiff"]
    reference = reference if reference in models else None
    crps_name = "crps_fair" if "crps_fair" in scores else "crps"
    found = []
    for variable in scores["variable"].values:
        units = str(scores["units"].sel(variable=variable).values) if "units" in scores.coords else ""
        for model in ensembles:
            if model == reference:
                continue

            def value(name, of=model):
                return float(scores[name].sel(model=of, variable=variable)) if name in scores else None

            found += check(variable, model, value("spread_skill"), value("power_ratio_smallest_octave"),
                           value("log_spectral_distance"), value(crps_name),
                           value("mae", reference) if reference else None, units, crps_name)
    return found


def setting_flags(table: xr.Dataset, setting: int, name: str | None = None, calibrated: bool = False) -> list[Flag]:
    """The flags of one setting of `corrdiff tune`'s table, per channel, the model named `name` (default
    "setting N"). `calibrated`: judge the scores after calibration (`*_after`, of the recommended setting) when
    the table has them. The CRPS rule compares the fair CRPS with the regression mean's MAE (`regression_mae`, a
    channel coordinate that tune adds) when the table has it."""
    row = table.isel(setting=setting)
    suffix = "_after" if calibrated and "spread_skill_after" in table else ""
    source = table if suffix else row
    found = []
    for channel in table["channel"].values:
        def value(key):
            key += suffix
            return float(source[key].sel(channel=channel)) if key in source else None

        reference = float(table["regression_mae"].sel(channel=channel)) if "regression_mae" in table.coords else None
        found += check(channel, name or f"setting {setting}", value("spread_skill"), value("power_ratio"),
                       value("lsd"), value("crps_fair"), reference, advice=TUNE_ADVICE)
    return found


def setting_summary(table: xr.Dataset, setting: int) -> str:
    """The kinds of a tune setting's flags, short ("under, noisy"), over every channel; "" when none."""
    return ", ".join(dict.fromkeys(SHORT[flag.kind] for flag in setting_flags(table, setting)))


def warning_lines(found: list[Flag]) -> list[str]:
    """One plain-text line per flag: 'warning: VARIABLE, MODEL: message'."""
    return [f"warning: {flag}" for flag in found]


def _known(value) -> bool:
    return value is not None and bool(np.isfinite(value))
