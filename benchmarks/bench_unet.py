"""UNet forward and forward+backward: corrdiff against PhysicsNeMo's reference, turn about in one process.

The network is the diffusion denoiser of the `paper` preset (12 condition + 4 noisy channels, 4 grid
channels, 128 base channels, [1, 2, 2, 2, 2], 4 blocks, attention at 28×28) with dropout off, at each grid
size and batch size asked for. Both contenders get the same inputs; turns alternate (A B A B …) and the
median of each is reported, with the ratio corrdiff / reference (below 1: corrdiff faster). Peak memory is
measured on CUDA. The FLOPs of one forward are counted with torch's FlopCounterMode, and the achieved
TFLOP/s are given as a fraction of a measured dense peak in the same precision (the best of a large matrix
product and a large 3×3 convolution).

usage: python benchmarks/bench_unet.py [--quick] [--device cpu|cuda] [--sizes 64 128] [--batches 1 8]
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import (cuda_peak_mib, environment, fmt_s, interleaved, dense_peak_tflops, pick_device,  # noqa: E402
                    print_table, ratio, write_results)
from contenders import config_for, ours, reference, reference_available  # noqa: E402

from corrdiff.diffusion import SamplerConfig  # noqa: E402
from corrdiff.perf import autocast, FastPath, prepare_denoiser  # noqa: E402


def count_forward_flops(shape: tuple[int, int], batch: int = 1) -> int:
    """FLOPs of one denoiser forward (a multiply-add counts 2), counted on the meta device: no arithmetic."""
    config = config_for(shape)
    with torch.device("meta"):
        contender = ours(config, "meta", SamplerConfig())
        x = torch.zeros(batch, config.out_channels, *shape)
        condition = torch.zeros(batch, config.in_channels, *shape)
        sigma = torch.ones(batch)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            contender.denoise(x, sigma, condition)
    return counter.get_total_flops()


def inputs(config, batch, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.out_channels, *config.img_shape, generator=gen).to(device)
    condition = torch.randn(batch, config.in_channels, *config.img_shape, generator=gen).to(device)
    sigma = torch.exp(torch.randn(batch, generator=gen) * 1.2 - 1.2).to(device)
    return x, sigma, condition


def cases_for(denoise, x, sigma, condition, bf16, device):
    def forward():
        with torch.no_grad(), autocast(bf16, device):
            denoise(x, sigma, condition)

    def forward_backward():
        with autocast(bf16, device):
            out = denoise(x, sigma, condition)
        out.float().square().mean().backward()

    return {"forward": forward, "forward+backward": forward_backward}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="square grid sides")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed turns per contender")
    parser.add_argument("--quick", action="store_true", help="one small case, for a smoke run")
    parser.add_argument("--compile", action="store_true", help="CUDA: torch.compile in corrdiff's fast path")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    sizes = args.sizes or ([64] if args.quick else [448, 128] if on_cuda else [128, 64])
    batches = args.batches or ([1] if args.quick else [1, 8])
    repeats = args.repeats or (2 if args.quick else 10 if on_cuda else 3)
    precisions = ["fp32", "bf16"] if on_cuda else ["fp32"]
    why_not = reference_available()
    if why_not:
        print(f"reference not importable ({why_not}); timing corrdiff alone. Run `make bench` for the comparison.")

    env = environment(device)
    rows, records = [], []
    for size in sizes:
        config = config_for((size, size))
        flops_per_sample = count_forward_flops((size, size))
        for batch in batches:
            if not on_cuda and size >= 128 and batch > 1 and not args.batches:
                continue  # a CPU forward+backward of 8 × 128² takes minutes per turn
            for precision in precisions:
                bf16 = precision == "bf16"
                torch.manual_seed(0)
                contenders = {"corrdiff": ours(config, device, SamplerConfig())}
                # The fast path: channels-last (bf16 comes from the autocast of the bf16 rows), compiled if asked.
                torch.manual_seed(0)
                contenders["corrdiff fast"] = ours(config, device, SamplerConfig())
                fast = prepare_denoiser(contenders["corrdiff fast"].denoiser,
                                        FastPath(channels_last=True, compile=args.compile))
                contenders["corrdiff fast"].denoise = lambda x, s, c, f=fast: f(x, s, c)
                if not why_not:
                    contenders["reference"] = reference(config, device, SamplerConfig())
                x, sigma, condition = inputs(config, batch, device)
                for kind in ("forward", "forward+backward"):
                    calls = {name: cases_for(c.denoise, x, sigma, condition, bf16, device)[kind]
                             for name, c in contenders.items()}
                    timed = interleaved(calls, repeats, device)
                    memory = {name: cuda_peak_mib(call, device) for name, call in calls.items()}
                    flops = flops_per_sample * batch * (3 if kind == "forward+backward" else 1)
                    record = {"size": size, "batch": batch, "precision": precision, "kind": kind, "flops": flops,
                              "parameters": contenders["corrdiff"].parameters()}
                    for name in contenders:
                        seconds = timed[name]["median_s"]
                        record[name] = {**timed[name], "peak_mib": memory[name], "tflops": flops / seconds / 1e12}
                    ref_s = record.get("reference", {}).get("median_s")
                    record["ratio_ours_over_reference"] = ref_s and record["corrdiff"]["median_s"] / ref_s
                    record["ratio_fast_over_reference"] = ref_s and record["corrdiff fast"]["median_s"] / ref_s
                    records.append(record)
                    row = [f"{size}² b{batch} {precision}", kind, fmt_s(record["corrdiff"]["median_s"])]
                    row += [fmt_s(record["corrdiff fast"]["median_s"]), fmt_s(ref_s),
                            ratio(record["corrdiff"]["median_s"], ref_s), ratio(record["corrdiff fast"]["median_s"], ref_s)]
                    row += [f"{record['corrdiff fast']['tflops']:.3g}"]
                    if on_cuda:
                        row += [f"{record['corrdiff']['peak_mib']:.0f}",
                                f"{record.get('reference', {}).get('peak_mib') or 0:.0f}"]
                    rows.append(row)
                    print(" | ".join(row), flush=True)
                del contenders
    # The yardstick is measured after the networks, on a machine as warm as they had it (measured first, a
    # CPU gave half the rate it reaches later).
    dense = {p: dense_peak_tflops(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    peaks = {p: d["best"] for p, d in dense.items()}
    for record, row in zip(records, rows):
        for name in ("corrdiff", "corrdiff fast", "reference"):
            if name in record:
                record[name]["fraction_of_dense_peak"] = record[name]["tflops"] / peaks[record["precision"]]
        row.insert(len(row) - (2 if on_cuda else 0), f"{record['corrdiff fast']['fraction_of_dense_peak']:.0%}")
    header = ["case", "pass", "corrdiff", "corrdiff fast", "reference", "ours/ref", "fast/ref", "TFLOP/s (fast)",
              "of dense peak (fast)"]
    header += ["peak MiB ours", "peak MiB ref"] if on_cuda else []
    gflops = {s: count_forward_flops((s, s)) / 1e9 for s in sizes}
    print_table(f"UNet (paper preset, denoiser) on {env['device']}, torch {env['torch']}, {env['date']}; "
                f"median of {repeats} interleaved turns; forward GFLOPs per sample: "
                + ", ".join(f"{s}²: {g:.0f}" for s, g in gflops.items())
                + "; dense peak (best of matmul, 3×3 conv) " + ", ".join(f"{p}: {t:.2f} TFLOP/s" for p, t in peaks.items()),
                header, rows)
    write_results("unet", {"benchmark": "unet", **env, "dense_peak_tflops": peaks, "reference_missing": why_not,
                           "forward_gflops_per_sample": gflops, "repeats": repeats, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
