"""`corrdiff tune`: parse, call `corrdiff.experiments.tuning.tune`, print the table. The main CLI registers `tune_command`."""

from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors


@user_errors
def tune_command(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) of a trained run.")],
    split: Annotated[str, typer.Option(help="Dataset split scored (it needs targets).")] = "validation",
    members: Annotated[int, typer.Option(help="Ensemble members per time.")] = 8,
    times: Annotated[int, typer.Option("--times", help="Evenly spaced times of the split scored (0: all); "
                     "docs/sampling.md says why 32.")] = 32,
    solver: Annotated[list[str] | None, typer.Option("--solver", help="Solver to measure (repeatable); default: "
                      "every solver that can sample the diffusion checkpoint (consistency for a consistency "
                      "student, the others for a denoiser; docs/sampling.md tables them; a name it does not know "
                      "is refused with the list).")] = None,
    nfe: Annotated[list[int] | None, typer.Option("--nfe", help="Network evaluations per member (repeatable); each "
                   "solver gets the most steps within it. Default: 5 7 9 11 15 23 35 (a consistency student: 1 2 4).")] = None,
    churn: Annotated[list[float] | None, typer.Option("--churn", help="S_churn for the solvers that take churn "
                     "(repeatable); default: 0. S_min, S_max, S_noise come from the config's sampler "
                     "section.")] = None,
    schedule: Annotated[list[str] | None, typer.Option("--schedule", help="karras or loglinear (repeatable); "
                        "default: the config's.")] = None,
    sigma_min: Annotated[list[float] | None, typer.Option("--sigma-min", help="Smallest noise level the sampler "
                         "stops at (repeatable); default: the config's sampler.sigma_min.")] = None,
    tolerance: Annotated[float, typer.Option(help="Recommend the cheapest setting within this fraction of the "
                         "best fair CRPS, or indistinguishable from it over the times (that passes "
                         "--lsd-tolerance).")] = 0.01,
    lsd_tolerance: Annotated[float, typer.Option(help="The recommended setting's log-spectral distance (log10 "
                             "units) is within this of the lowest among the settings within --tolerance; inf: "
                             "no texture rule.")] = 0.05,
    calibrate: Annotated[bool, typer.Option("--calibrate/--no-calibrate", help="Fit a per-channel residual "
                         "factor: the one with the lowest fair CRPS, which brings spread/skill towards 1.")] = True,
    allow_test_split: Annotated[bool, typer.Option("--allow-test-split", help="Tune on --split test (or all), "
                                "the times kept for the final evaluation; recorded in sampler.yaml.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for tune.csv, tune.nc, tune.png and "
                   "sampler.yaml; default: <run_dir>/tune/ and <run_dir>/sampler.yaml (where generate finds "
                   "it).")] = None,
    checkpoint_regression: Annotated[Path | None, typer.Option(help="Default: <run_dir>/regression.")] = None,
    checkpoint_diffusion: Annotated[Path | None, typer.Option(help="Default: <run_dir>/diffusion.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: generate.seed); members as generate draws "
                    "them.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the outputs of an earlier tune.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Measure samplers (solver x network evaluations x churn) on held-out data: CRPS, fair CRPS, MAE,
    spread/skill, power at the smallest scales, log-spectral distance and seconds per member, with bootstrap
    intervals over the times; recommend the cheapest setting within --tolerance of the best fair CRPS or
    indistinguishable from it, whose texture is as true as theirs (--lsd-tolerance), written to sampler.yaml,
    which generate uses when the config has no sampler section. A killed tune, rerun, measures only the
    settings it had not finished."""
    from rich.console import Console

    from corrdiff.config import load_config
    from corrdiff.diffusion.solvers import SOLVERS
    from corrdiff.experiments.tuning import tune, TuneGrid, TuneOutputs, TuneRequest
    from corrdiff.experiments.tuning_rule import RecommendationRule
    from corrdiff.evaluation.trust import setting_summary
    from corrdiff.experiments.tuning_files import difference_to_best

    overrides = list(set_ or []) + ([f"generate.seed={seed}"] if seed is not None else [])
    cfg = load_config(config, overrides)
    run_dir = Path(cfg.run_dir)
    request = TuneRequest(checkpoint_regression or run_dir / "regression",
                          checkpoint_diffusion or run_dir / "diffusion", split=split,
                          allow_test_split=allow_test_split, times=times, members=members)
    grid = TuneGrid(solvers=solver or list(SOLVERS), nfe=nfe or None, churn=churn or [0.0],
                    schedules=schedule or None, sigma_mins=sigma_min or None)
    rule = RecommendationRule(tolerance=tolerance, lsd_tolerance=lsd_tolerance, calibration=calibrate)
    outputs = TuneOutputs(out, out / "sampler.yaml" if out is not None else None, overwrite=overwrite,
                          progress=not quiet)
    result = tune(cfg, request, grid, rule, outputs)
    console = Console()
    console.print(rich_table(result))
    recommended = result.recommendation
    console.print(f"recommended: {recommended.tuning['setting']}: fair CRPS "
                  f"{difference_to_best(result.table, result.chosen)} from the best ({recommended.tuning['best']}; "
                  f"interval: {recommended.tuning['interval']}); LSD {recommended.tuning['lsd_mean']:.3f} against "
                  f"{recommended.tuning['best_lsd_mean']:.3f}", markup=False)
    if recommended.sampler.residual_scale:
        pairs = zip(recommended.target_channels, recommended.sampler.residual_scale)
        scales = ", ".join(f"{c} {s:g}" for c, s in pairs)
        console.print(f"calibration: residual_scale {scales}", markup=False)
    print_warnings(console, result)
    for path in result.paths:
        typer.echo(f"written: {path}")


def print_warnings(console, result) -> None:
    """A warning line per trust flag of the recommended setting, calibrated where tune calibrated it
    (`corrdiff.evaluation.trust`); the outputs are written all the same and the exit code stays 0."""
    from corrdiff.evaluation.trust import setting_flags, warning_lines

    name = f"recommended {result.recommendation.tuning['setting']}"
    for line in warning_lines(setting_flags(result.table, result.chosen, name, calibrated=True)):
        console.print(line, style="bold red", markup=False, highlight=False)


def rich_table(result):
    """The combined scores, one row per setting; the recommended row in bold, the best fair CRPS starred. Columns
    that hold one value for every setting (schedule, churn) are left out."""
    from rich import box
    from rich.table import Table

    from corrdiff.evaluation import trust
    from corrdiff.evaluation.trust import setting_summary
    from corrdiff.experiments.tuning_files import difference_to_best

    table = result.table
    level = f"{float(table.attrs['bootstrap_level']):.0%}"
    varying = {name: len(set(table[name].values.tolist())) > 1 for name in ("schedule", "S_churn", "sigma_min")}
    view = Table(title=f"samplers on {table.attrs['split']}: {table.attrs['times']} times, "
                       f"{table.attrs['members']} members", box=box.SIMPLE_HEAD, pad_edge=False,
                 collapse_padding=True,
                 caption="CRPS (usual), fair CRPS, MAE: mean over channels of the score / truth std; fair vs "
                         f"best: % difference, [{level} interval] over {table.attrs['bootstrap_resamples']} "
                         "bootstrap resamples of the times, paired; power: predicted / true at wavelengths of "
                         "2-4 grid spacings; LSD: mean |log10 predicted / true power| over wavenumbers; trust: "
                         "some channel under- or over-dispersed (spread/skill outside "
                         f"{trust.SPREAD_SKILL_RANGE[0]:g}-{trust.SPREAD_SKILL_RANGE[1]:g}), too smooth or noisy "
                         f"(power outside {trust.POWER_RATIO_RANGE[0]:g}-{trust.POWER_RATIO_RANGE[1]:g}), LSD above "
                         f"{trust.LSD_LIMIT:g}")
    columns = ["solver"] + [title for title, name in (("schedule", "schedule"), ("churn", "S_churn"),
                                                      ("σ_min", "sigma_min")) if varying[name]]
    for title in columns + ["steps", "NFE", "CRPS", "fair\nCRPS", f"fair vs best\n% [{level}]", "MAE",
                            "spread/\nskill", "power\n2-4Δ", "LSD", "s per\nmember"]:
        view.add_column(title, justify="left" if title in ("solver", "schedule") else "right", no_wrap=True)
    view.add_column("trust")  # may wrap: the only column of words
    for i in range(table.sizes["setting"]):
        row = table.isel(setting=i)
        cells = [str(row["solver"].values)]
        cells += [str(row["schedule"].values)] if varying["schedule"] else []
        cells += [f"{float(row['S_churn']):g}"] if varying["S_churn"] else []
        cells += [f"{float(row['sigma_min']):g}"] if varying["sigma_min"] else []
        cells += [str(int(row["num_steps"])), str(int(row["network_evaluations"])), f"{float(row['crps_norm']):.4f}",
                  f"{float(row['crps_fair_norm']):.4f}" + ("*" if i == result.best else ""),
                  difference_to_best(table, i).replace("%", ""), f"{float(row['mae_norm']):.4f}",
                  f"{float(row['spread_skill_mean']):.3f}", f"{float(row['power_ratio_mean']):.3g}",
                  f"{float(row['lsd_mean']):.3f}", f"{float(row['seconds_per_member']):.3g}",
                  setting_summary(table, i)]
        view.add_row(*cells, style="bold" if i == result.chosen else None)
    return view
