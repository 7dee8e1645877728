"""Data order: seconds per training step to draw a global batch's dataset indices, before and after the per-epoch cache.

Before: every sample of a step drew its own permutation of the whole dataset (B permutations of N per step).
After: `corrdiff.training.batches.DataOrder` keeps the current epoch's permutation, so a step slices it and draws a
new one only when it enters the next epoch. Both give the same indices (tests/training/test_data_order.py).
The default size is the paper's: about 35,000 training times, global batch 512. "after" is the mean over many
consecutive steps, epoch changes included; its slowest step (one that enters a new epoch) is shown too.

usage: python benchmarks/bench_indices.py [--quick] [--samples 35000] [--batch 512]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, fmt_s, print_table, write_results  # noqa: E402

from corrdiff.seeding import derive_seed  # noqa: E402
from corrdiff.training.batches import DataOrder  # noqa: E402


def per_sample_permutations(step: int, global_batch: int, num_samples: int, seed: int) -> list[int]:
    """The implementation before the cache (kept here as the contender): one permutation per sample."""
    out = []
    for position in range(step * global_batch, (step + 1) * global_batch):
        epoch, offset = divmod(position, num_samples)
        perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))
        out.append(int(perm[offset]))
    return out


def fmt_time(seconds: float) -> str:
    """Microseconds below a millisecond (the cached steps), else common.fmt_s."""
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else fmt_s(seconds)


def time_steps(draw, steps) -> list[float]:
    """Seconds of each call draw(step)."""
    times = []
    for step in steps:
        start = time.perf_counter()
        draw(step)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=35_000, help="training samples (dataset length)")
    parser.add_argument("--batch", type=int, default=512, help="global batch")
    parser.add_argument("--before-steps", type=int, default=None, help="steps timed with per-sample permutations")
    parser.add_argument("--after-steps", type=int, default=None, help="consecutive steps timed with the cache")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    before_steps = args.before_steps or (2 if args.quick else 5)
    after_steps = args.after_steps or (200 if args.quick else 2000)
    env = environment(torch.device("cpu"))
    seed = 0

    # "before" from the step that straddles the first epoch's end on; "after" on a run of consecutive steps.
    steps_per_epoch = args.samples / args.batch
    probe = list(range(int(steps_per_epoch), int(steps_per_epoch) + before_steps))
    before = time_steps(lambda s: per_sample_permutations(s, args.batch, args.samples, seed), probe)
    order = DataOrder(args.samples, seed)
    after = time_steps(lambda s: order.step(s, args.batch), range(after_steps))
    assert order.step(probe[0], args.batch) == per_sample_permutations(probe[0], args.batch, args.samples, seed)

    before_s, after_s = statistics.median(before), statistics.fmean(after)
    records = [
        {"method": "per-sample permutations (before)", "per_step_s": before_s, "statistic": "median",
         "slowest_step_s": max(before), "steps_timed": len(before)},
        {"method": "one permutation per epoch (after)", "per_step_s": after_s, "statistic": "mean",
         "slowest_step_s": max(after), "steps_timed": len(after)},
    ]
    rows = [[r["method"], fmt_time(r["per_step_s"]), fmt_time(r["slowest_step_s"]), r["steps_timed"]] for r in records]
    print_table(f"data order: {args.samples:,} samples, global batch {args.batch}, {steps_per_epoch:.1f} steps/epoch "
                f"({env['device']})", ["method", "per step", "slowest step", "steps timed"], rows)
    print(f"\nspeed-up: {before_s / after_s:,.0f}× per step")
    write_results("indices", {"benchmark": "indices", **env, "samples": args.samples, "batch": args.batch,
                              "speedup": before_s / after_s, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
