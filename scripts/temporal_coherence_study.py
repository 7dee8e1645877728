"""Members that are time series, measured (docs/sampling.md): independent sampling against AR(1) starting noise.

For a trained run, generates the same consecutive times with independent members and with `--coherence ar1` at
each rho (and, with `--fit-start`, at a rho per channel fitted on other times: truth's lag-1 autocorrelation of the
residual there, as `corrdiff score` reports it), scores each ensemble against truth (`corrdiff.evaluation.evaluate`, which adds the scores of time), and
prints a Markdown table: the residual's lag 1–3 autocorrelation of truth and of the members, the ramps' spread and
Wasserstein distance to truth's, and the per-time fair CRPS and spread/skill, with the change of fair CRPS against
independent sampling. Also writes the numbers as JSON.

    python scripts/temporal_coherence_study.py demo-out/config.yaml --start 2000-02-24T08 --count 48 \
        --fit-start 2000-02-21T00 --rhos 0.3 0.5 0.7 0.9 --members 8 --out coherence-study
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff.config import load_config
from corrdiff.evaluation import evaluate

LAGS = ("residual_autocorrelation_lag1", "residual_autocorrelation_lag2", "residual_autocorrelation_lag3")


def hourly_times(start: str, count: int, step_hours: float) -> list[str]:
    first = np.datetime64(start, "s")
    step = np.timedelta64(int(round(step_hours * 3600)), "s")
    return [str(first + i * step) for i in range(count)]


def generate(config: Path, out: Path, times: list[str], members: int, rho: str | None, seed: int,
             split: str) -> Path:
    """The ensemble of `times` with independent members (rho None) or AR(1) starting noise of lag-1 `rho`."""
    command = [sys.executable, "-m", "corrdiff", "generate", str(config), "--out", str(out), "--members",
               str(members), "--seed", str(seed), "--split", split, "--quiet", "--overwrite"]
    command += [arg for time in times for arg in ("--times", time)]
    if rho is not None:
        command += ["--coherence", "ar1", "--coherence-rho", rho]
    subprocess.run(command, check=True)
    return out


def measured(ensemble: Path, truth: Path) -> dict:
    """Per variable: the corrdiff model's and truth's scores of time, the fair CRPS and spread/skill."""
    scores = evaluate(ensemble, truth, distributions=True).scores
    rows = {}
    for variable in scores["variable"].values.tolist():
        model = scores.sel(model=scores["model"].values[0], variable=variable)
        row = {name: float(model[name]) for name in LAGS + ("ramp_std", "ramp_wasserstein", "crps_fair",
                                                              "spread_skill")}
        row |= {f"truth_{name}": float(scores[f"truth_{name}"].sel(variable=variable))
                for name in LAGS + ("ramp_std",)}
        rows[variable] = row
    return rows


def table(results: dict[str, dict], variables: list[str]) -> str:
    lines = ["| variable | members | r(1) | r(2) | r(3) | ramp σ | ramp W1 | fair CRPS | Δ fair CRPS | spread/skill |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    independent = results["independent"]
    for variable in variables:
        truth = independent[variable]
        lines.append(f"| {variable} | truth | {truth['truth_' + LAGS[0]]:.3f} | {truth['truth_' + LAGS[1]]:.3f} | "
                     f"{truth['truth_' + LAGS[2]]:.3f} | {truth['truth_ramp_std']:.4g} | – | – | – | – |")
        for label, rows in results.items():
            row = rows[variable]
            change = 100 * (row["crps_fair"] / independent[variable]["crps_fair"] - 1)
            lines.append(f"| | {label} | {row[LAGS[0]]:.3f} | {row[LAGS[1]]:.3f} | {row[LAGS[2]]:.3f} | "
                         f"{row['ramp_std']:.4g} | {row['ramp_wasserstein']:.4g} | {row['crps_fair']:.4g} | "
                         f"{change:+.1f} % | {row['spread_skill']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="run config of a trained run")
    parser.add_argument("--start", required=True, help="first time (ISO)")
    parser.add_argument("--count", type=int, default=48, help="consecutive times")
    parser.add_argument("--step-hours", type=float, default=1.0, help="the data's time step")
    parser.add_argument("--rhos", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truth", type=Path, help="truth (default: the config's dataset spec)")
    parser.add_argument("--split", default="test", help="the split of the scored times")
    parser.add_argument("--fit-split", default="validation", help="the split of the --fit-start times")
    parser.add_argument("--fit-start", help="first of --count times (other than the scored ones) on which a rho per "
                        "channel is fitted")
    parser.add_argument("--out", type=Path, required=True, help="folder for the ensembles and results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = args.truth or Path(load_config(args.config).data)
    times = hourly_times(args.start, args.count, args.step_hours)
    settings = [(None, "independent", "independent")] + [(f"{r:g}", f"ar1 ρ={r:g}", f"ar1_{r:g}") for r in args.rhos]
    fitted = None
    if args.fit_start:
        fitted = fit_rho(args, truth)
        settings.append((",".join(f"{r:g}" for r in fitted), "ar1 ρ fitted", "ar1_fitted"))
    results = {}
    for rho, label, name in settings:
        ensemble = generate(args.config, args.out / f"{name}.nc", times, args.members, rho, args.seed, args.split)
        results[label] = measured(ensemble, truth)
        print(f"{label}: done", file=sys.stderr)
    variables = list(results["independent"])
    text = table(results, variables)
    print(text)
    (args.out / "coherence.md").write_text(text + "\n")
    (args.out / "coherence.json").write_text(json.dumps({"times": times, "members": args.members, "seed": args.seed,
                                                         "fitted_rho": fitted, "results": results}, indent=1))
    if fitted is not None:
        print(f"fitted rho per channel (on {args.count} times from {args.fit_start}): {fitted}")


def fit_rho(args, truth: Path) -> list[float]:
    """Truth's lag-1 autocorrelation of the residual on the `--fit-start` times (independent members give the
    regression mean it is taken about), per output channel in the file's order, to two decimals."""
    times = hourly_times(args.fit_start, args.count, args.step_hours)
    ensemble = generate(args.config, args.out / "fit_independent.nc", times, args.members, None, args.seed,
                        args.fit_split)
    scores = evaluate(ensemble, truth, distributions=False).scores
    with xr.open_dataset(ensemble) as ds:
        channels = [name for name in ds.data_vars if "member" in ds[name].dims]
    lag1 = scores[f"truth_{LAGS[0]}"]
    return [round(min(max(float(lag1.sel(variable=c)), 0.0), 0.99), 2) for c in channels]


if __name__ == "__main__":
    main()
