"""How stable is `corrdiff tune`'s recommendation in the number of scored times (`--times`)? A simulation.

Each time t gives setting s a fair CRPS a_t · (1 + δ_s + ε_st): a_t ~ lognormal(0, 0.3) is how hard the time
is (common to every setting), δ_s the setting's true excess over the best, ε_st ~ N(0, τ²) how much the
setting's excess varies from time to time (the noise a paired comparison sees). The settings mimic a tune grid:
δ = 0, 0.3, 0.7, 1.5, 4% at NFE 35, 23, 11, 7, 5; with every time known (τ → 0 or T → ∞) the rule
(within 1% of the best) picks NFE 11. Per-time sums go through the real `build_table` (bootstrap included)
and `choose`, R times per (T, τ), each with new times. Printed per (τ, T): how often the pick is NFE 11,
how often it is acceptable (true excess ≤ 1%: NFE 35, 23 or 11), how often it is 4% worse (NFE 5); for
comparison, how often two other rules pick an acceptable setting: the tolerance alone (no bootstrap), and
non-inferiority (the upper end of the paired interval within the tolerance; not what `choose` does).

    PYTHONPATH=src python scripts/tune_times_stability.py [--replicates 100] [--resamples 300]

docs/sampling.md gives what it printed and what it means for the default of --times.
"""

import argparse
import time as clock

import numpy as np

from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.evaluation.metrics import STATS, SUMS
from corrdiff.experiments.tuning import build_table, Scores, Truth
from corrdiff.experiments.tuning_rule import choose

NFE = (35, 23, 11, 7, 5)
EXCESS = np.array([0.0, 0.003, 0.007, 0.015, 0.04])
MEMBERS = 8


def per_time_table(fair_crps: np.ndarray, resamples: int):
    """The tune table of settings whose per-time fair CRPS is `fair_crps` (setting, time)."""
    settings = [SamplerConfig(solver="euler", num_steps=n) for n in NFE]
    times = fair_crps.shape[1]
    results = []
    for values in fair_crps:
        sums = np.zeros((times, 1, STATS + MEMBERS + 1))
        sums[:, 0, [SUMS.index(k) for k in ("count", "squared_error", "variance", "abs_error")]] = 1.0
        sums[:, 0, SUMS.index("crps")] = sums[:, 0, SUMS.index("crps_fair")] = values
        flat = np.ones((times, 1, 3))
        results.append(Scores.from_arrays(MEMBERS, np.linspace(0, 0.5, 3), sums, flat, flat))
    truth = Truth(np.arange(times).astype("datetime64[ns]"), [], np.zeros((times, 1, 1, 1)), [0] * times,
                  np.ones(1))
    return build_table(settings, results, [0.0] * len(NFE), truth, ["u"], resamples=resamples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=300)
    parser.add_argument("--times", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--tau", type=float, nargs="+", default=[0.01, 0.03, 0.06])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    start = clock.perf_counter()
    print("| τ | times | pick NFE 11 | acceptable (≤ 1% worse) | 4% worse (NFE 5) | tolerance alone: acceptable | "
          "non-inferiority: acceptable, NFE |")
    print("|---|---|---|---|---|---|---|")
    for tau in args.tau:
        for times in args.times:
            picks, tolerance_only, inferior, cost = [], [], [], []
            for _ in range(args.replicates):
                hardness = rng.lognormal(0.0, 0.3, size=times)
                fair = hardness * (1 + EXCESS[:, None] + rng.normal(0.0, tau, size=(len(NFE), times)))
                table = per_time_table(fair, args.resamples)
                picks.append(choose(table, 0.01, None))
                best = float(table["crps_fair_norm"].min())
                within = np.flatnonzero(table["crps_fair_norm_diff_high"].values <= 0.01 * best)
                inferior.append(min(within, key=lambda i: NFE[i]))
                del table["crps_fair_norm_diff_low"], table["crps_fair_norm_diff_high"]
                tolerance_only.append(choose(table, 0.01, None))
            picks, tolerance_only, inferior = np.array(picks), np.array(tolerance_only), np.array(inferior)
            print(f"| {tau:.0%} | {times} | {np.mean(picks == 2):.0%} | {np.mean(EXCESS[picks] <= 0.01):.0%} | "
                  f"{np.mean(picks == 4):.0%} | {np.mean(EXCESS[tolerance_only] <= 0.01):.0%} | "
                  f"{np.mean(EXCESS[inferior] <= 0.01):.0%}, {np.mean(np.array(NFE)[inferior]):.0f} |", flush=True)
    print(f"{args.replicates} replicates, {args.resamples} bootstrap resamples each; "
          f"{clock.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
