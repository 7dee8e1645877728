"""Sampling: seconds per ensemble member with the EDM Heun sampler, corrdiff against PhysicsNeMo's reference.

One call draws a batch of members for one time (regression mean + sampled residual, 18 steps by default:
35 denoiser evaluations per member). Contenders take turns (A B A B …) in one process; the table gives
the median seconds per member and the ratio corrdiff / reference. On CUDA corrdiff also runs its fast path
(bf16 autocast, channels-last, CUDA graphs), and the fast path's ensemble is compared with the plain one.
The reference runs plain and with its own generation switches ("reference fast": channels-last, fp16 weights
on CUDA, Apex GroupNorm where importable, compiled with --compile); the JSON records whether each contender
asked to compile really ran compiled (`ran_compiled`).

usage: python benchmarks/bench_sampling.py [--quick] [--device cpu|cuda] [--size 448] [--batches 1 16]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, fmt_s, interleaved, pick_device, print_table, ratio, write_results  # noqa: E402
from contenders import config_for, ours, reference, reference_available, ReferenceSwitches  # noqa: E402

from corrdiff.diffusion import SamplerConfig  # noqa: E402
from corrdiff.fast_path import FastPath  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None, help="square grid side (default 448 on CUDA, 32 on CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="members per sampler call")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compile", action="store_true", help="CUDA: torch.compile in corrdiff's fast path")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    size = args.size or (448 if on_cuda else 32)
    batches = args.batches or ([1] if args.quick else [1, 16] if on_cuda else [1, 4])
    steps = 4 if args.quick and args.steps == 18 else args.steps
    repeats = args.repeats or (1 if args.quick or not on_cuda else 3)
    sampler = SamplerConfig(num_steps=steps)
    why_not = reference_available()
    if why_not:
        print(f"reference not importable ({why_not}); timing corrdiff alone. Run `make bench` for the comparison.")
    env = environment(device)
    config = config_for((size, size))
    contenders = {"corrdiff": ours(config, device, sampler)}
    # corrdiff's fast path: channels-last, and on CUDA bf16 autocast and CUDA graphs; the same weights
    contenders["corrdiff fast"] = ours(config, device, sampler,
                                      FastPath.resolve(device, channels_last=True, compile=args.compile))
    if not why_not:
        contenders["reference"] = reference(config, device, sampler)
        contenders["reference fast"] = reference(config, device, sampler,
                                                 ReferenceSwitches.fast(device, compile=args.compile, fp16=True))
    for c in contenders.values():
        c.regression.eval(), c.denoiser.eval()
    condition = torch.randn(1, config.in_channels, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    plain, fast = contenders["corrdiff"], contenders["corrdiff fast"]
    a, b = plain.sample(condition, 2, 0), fast.sample(condition, 2, 0)
    fast_error = float((a - b).norm() / a.norm())
    rows, records = [], []
    for batch in batches:
        calls = {name: (lambda c=c, b=batch: c.sample(condition, b, 0)) for name, c in contenders.items()}
        try:
            timed = interleaved(calls, repeats, device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"{batch} members per call: out of memory, skipped", flush=True)
            continue
        record = {"size": size, "steps": steps, "batch": batch}
        for name, contender in contenders.items():
            record[name] = {**timed[name], "per_member_s": timed[name]["median_s"] / batch,
                            "ran_compiled": contender.ran_compiled()}
        ref = record.get("reference", {}).get("per_member_s")
        ref_fast = record.get("reference fast", {}).get("per_member_s")
        fast = record["corrdiff fast"]["per_member_s"]
        record["ratio_ours_over_reference"] = ref and record["corrdiff"]["per_member_s"] / ref
        record["ratio_fast_over_reference"] = ref and fast / ref
        record["ratio_fast_over_reference_fast"] = ref_fast and fast / ref_fast
        records.append(record)
        row = [f"{size}² ×{batch} members", fmt_s(record["corrdiff"]["per_member_s"])]
        row += [fmt_s(fast), fmt_s(ref), fmt_s(ref_fast), ratio(record["corrdiff"]["per_member_s"], ref),
                ratio(fast, ref), ratio(fast, ref_fast)]
        rows.append(row)
        print(" | ".join(row), flush=True)
    header = ["case", "corrdiff / member", "fast / member", "reference / member", "ref fast / member", "ours/ref",
              "fast/ref", "fast/ref fast"]
    note = f"; fast vs plain ensemble relative L2 {fast_error:.3g}"
    print_table(f"Sampling ({steps} Heun steps, paper preset) on {env['device']}, torch {env['torch']}, "
                f"{env['date']}; median of {repeats} interleaved turns{note}", header, rows)
    write_results("sampling", {"benchmark": "sampling", **env, "reference_missing": why_not, "repeats": repeats,
                               "compile_asked": args.compile,
                               "fast_vs_plain_relative_l2": fast_error, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
