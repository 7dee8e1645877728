"""UNet forward and forward+backward: corrdiff against PhysicsNeMo's reference, turn about in one process.

The network is the diffusion denoiser of the `paper` preset (12 condition + 4 noisy channels, 4 grid
channels, 128 base channels, [1, 2, 2, 2, 2], 4 blocks, attention at 28×28) with dropout off, at each grid
size and batch size asked for. The contenders (corrdiff plain and fast, the reference plain and with its own
fast switches) get the same inputs; turns alternate (A B A B …) and the median of each is reported, with the
ratios corrdiff / reference (below 1: corrdiff faster). The forward is timed as sampling runs it (eval mode,
no_grad), forward+backward as training does (train mode). Whether each contender asked to compile really
ran compiled code is recorded (`ran_compiled`). Peak memory of
one call is measured after the timing: allocated CUDA memory on a GPU; on CPU, the resident-set high-water
mark in a child process (see cpu_memory_in_child). The FLOPs of one forward are counted with torch's
FlopCounterMode, and the achieved TFLOP/s are given as a fraction of a measured dense peak in the same precision (the best of a large matrix
product and a large 3×3 convolution).

usage: python benchmarks/bench_unet.py [--quick] [--device cpu|cuda] [--sizes 64 128] [--batches 1 8]
"""

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import (peak_mib, environment, fmt_s, interleaved, dense_peak_tflops, pick_device,  # noqa: E402
                    print_table, ratio, write_results)
from contenders import config_for, ours, reference, reference_available, ReferenceSwitches  # noqa: E402

from corrdiff.diffusion import SamplerConfig  # noqa: E402
from corrdiff.fast_path import autocast, FastPath  # noqa: E402


@functools.cache  # asked for every case of a size, and again for the table
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
    """The two timed calls; the network's mode is set by `set_mode` beforehand (outside the timing)."""
    def forward():
        with torch.no_grad(), autocast(bf16, device):
            denoise(x, sigma, condition)

    def forward_backward():
        with autocast(bf16, device):
            out = denoise(x, sigma, condition)
        out.float().square().mean().backward()

    return {"forward": forward, "forward+backward": forward_backward}


NAMES = ("corrdiff", "corrdiff fast", "reference", "reference fast")


def build_contenders(config, device, with_reference: bool, compile: bool) -> dict:
    contenders = {"corrdiff": ours(config, device, SamplerConfig())}
    # The fast path: channels-last (bf16 comes from the autocast of the bf16 rows), compiled if asked.
    contenders["corrdiff fast"] = ours(config, device, SamplerConfig(), FastPath(channels_last=True, compile=compile))
    if with_reference:
        contenders["reference"] = reference(config, device, SamplerConfig())
        # Its own best switches: channels-last, Apex GroupNorm where importable, compiled if asked (precision
        # from the row's autocast, with which its amp_mode complies).
        contenders["reference fast"] = reference(config, device, SamplerConfig(),
                                                 ReferenceSwitches.fast(device, compile=compile))
    return contenders


def set_mode(contenders: dict, kind: str) -> None:
    """Eval mode for the forward (as sampling runs it), train mode for forward+backward (as training does)."""
    for contender in contenders.values():
        contender.denoiser.train(kind != "forward")


def cases(args, on_cuda: bool):
    """(size, batch, precision) of every measured case."""
    sizes = args.sizes or ([64] if args.quick else [448, 128] if on_cuda else [128, 64])
    batches = args.batches or ([1] if args.quick else [1, 8])
    for size in sizes:
        for batch in batches:
            if not on_cuda and size >= 128 and batch > 1 and not args.batches:
                continue  # a CPU forward+backward of 8 × 128² takes minutes per turn
            for precision in ["fp32", "bf16"] if on_cuda else ["fp32"]:
                yield size, batch, precision


def measure_memory(contenders, x, sigma, condition, bf16, device, kind) -> dict:
    """Peak memory of one call per contender, gradients released first (the call allocates its own)."""
    memory = {}
    set_mode(contenders, kind)
    for name, contender in contenders.items():
        contender.denoiser.zero_grad(set_to_none=True)
        memory[name] = peak_mib(cases_for(contender.denoise, x, sigma, condition, bf16, device)[kind], device)
    return memory


def cpu_memory_in_child(args, why_not) -> dict:
    """CPU peak memory of every case, measured in a child process whose allocator returns freed blocks.

    With glibc's mmap threshold fixed at 64 KiB, every large tensor is its own mapping, unmapped when freed,
    so the resident-set high-water mark follows the live tensors (as CUDA's allocated-memory peak does)
    instead of what the allocator kept from earlier calls.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        command = [sys.executable, __file__, "--memory-only", str(out), "--device", "cpu"]
        command += ["--sizes", *map(str, args.sizes)] if args.sizes else []
        command += ["--batches", *map(str, args.batches)] if args.batches else []
        command += ["--quick"] if args.quick else []
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"memory measurement failed: {result.stderr[-2000:]}")
            return {}
        return json.loads(out.read_text())


def memory_only(args, device, why_not) -> int:
    results = {}
    for size, batch, precision in cases(args, device.type == "cuda"):
        config = config_for((size, size))
        contenders = build_contenders(config, device, not why_not, args.compile)
        x, sigma, condition = inputs(config, batch, device)
        for kind in ("forward", "forward+backward"):
            memory = measure_memory(contenders, x, sigma, condition, precision == "bf16", device, kind)
            for name, mib in memory.items():
                results[f"{size}/{batch}/{precision}/{kind}/{name}"] = mib
        del contenders
    Path(args.memory_only).write_text(json.dumps(results))
    return 0


def row_of(record: dict) -> list[str]:
    ref_s = record.get("reference", {}).get("median_s")
    ref_fast_s = record.get("reference fast", {}).get("median_s")
    fast_s = record["corrdiff fast"]["median_s"]
    row = [f"{record['size']}² b{record['batch']} {record['precision']}", record["kind"],
           fmt_s(record["corrdiff"]["median_s"]), fmt_s(fast_s), fmt_s(ref_s), fmt_s(ref_fast_s),
           ratio(record["corrdiff"]["median_s"], ref_s), ratio(fast_s, ref_s), ratio(fast_s, ref_fast_s),
           f"{record['corrdiff fast']['tflops']:.3g}"]
    if "fraction_of_dense_peak" in record["corrdiff fast"]:
        row.append(f"{record['corrdiff fast']['fraction_of_dense_peak']:.0%}")
    for name in NAMES:
        mib = record.get(name, {}).get("peak_mib")
        row.append("-" if mib is None else f"{mib:.0f}")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="square grid sides")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed turns per contender")
    parser.add_argument("--quick", action="store_true", help="one small case, for a smoke run")
    parser.add_argument("--compile", action="store_true", help="CUDA: torch.compile in corrdiff's fast path")
    parser.add_argument("--memory-only", metavar="JSON", help=argparse.SUPPRESS)  # the CPU memory child
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    repeats = args.repeats or (2 if args.quick else 10 if on_cuda else 3)
    why_not = reference_available()
    if args.memory_only:
        return memory_only(args, device, why_not)
    if why_not:
        print(f"reference not importable ({why_not}); timing corrdiff alone. Run `make bench` for the comparison.")

    env = environment(device)
    records, skipped = [], []
    for size, batch, precision in cases(args, on_cuda):
        config = config_for((size, size))
        flops_per_sample = count_forward_flops((size, size))
        bf16 = precision == "bf16"
        contenders = build_contenders(config, device, not why_not, args.compile)
        x, sigma, condition = inputs(config, batch, device)
        for kind in ("forward", "forward+backward"):
            set_mode(contenders, kind)
            calls = {name: cases_for(c.denoise, x, sigma, condition, bf16, device)[kind]
                     for name, c in contenders.items()}
            try:
                timed = interleaved(calls, repeats, device)
                memory = measure_memory(contenders, x, sigma, condition, bf16, device, kind) if on_cuda else {}
            except torch.OutOfMemoryError:  # e.g. float32 forward+backward of 8 × 448² (~80 GiB of activations)
                for contender in contenders.values():
                    contender.denoiser.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                skipped.append(f"{size}² b{batch} {precision} {kind}")
                print(f"{skipped[-1]}: out of memory, skipped", flush=True)
                continue
            flops = flops_per_sample * batch * (3 if kind == "forward+backward" else 1)
            record = {"size": size, "batch": batch, "precision": precision, "kind": kind, "flops": flops,
                      "parameters": contenders["corrdiff"].parameters()}
            for name, contender in contenders.items():
                record[name] = {**timed[name], "peak_mib": memory.get(name),
                                "tflops": flops / timed[name]["median_s"] / 1e12,
                                "ran_compiled": contender.ran_compiled()}
            ref_s = record.get("reference", {}).get("median_s")
            ref_fast_s = record.get("reference fast", {}).get("median_s")
            record["ratio_ours_over_reference"] = ref_s and record["corrdiff"]["median_s"] / ref_s
            record["ratio_fast_over_reference"] = ref_s and record["corrdiff fast"]["median_s"] / ref_s
            record["ratio_fast_over_reference_fast"] = ref_fast_s and record["corrdiff fast"]["median_s"] / ref_fast_s
            records.append(record)
            print(" | ".join(row_of(record)), flush=True)
        del contenders
    if not on_cuda:
        memory = cpu_memory_in_child(args, why_not)
        for record in records:
            for name in NAMES:
                key = f"{record['size']}/{record['batch']}/{record['precision']}/{record['kind']}/{name}"
                if name in record:
                    record[name]["peak_mib"] = memory.get(key)
    # The yardstick is measured after the networks, on a machine as warm as they had it (measured first, a
    # CPU gave half the rate it reaches later).
    precisions = sorted({r["precision"] for r in records}, reverse=True)
    dense = {p: dense_peak_tflops(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    peaks = {p: d["best"] for p, d in dense.items()}
    for record in records:
        for name in NAMES:
            if name in record:
                record[name]["fraction_of_dense_peak"] = record[name]["tflops"] / peaks[record["precision"]]
    header = ["case", "pass", "corrdiff", "corrdiff fast", "reference", "reference fast", "ours/ref", "fast/ref",
              "fast/ref fast", "TFLOP/s (fast)", "of dense peak (fast)", "peak MiB ours", "peak MiB fast",
              "peak MiB ref", "peak MiB ref fast"]
    sizes = sorted({r["size"] for r in records}, reverse=True)
    gflops = {s: count_forward_flops((s, s)) / 1e9 for s in sizes}
    print_table(f"UNet (paper preset, denoiser) on {env['device']}, torch {env['torch']}, {env['date']}; "
                f"median of {repeats} interleaved turns; forward GFLOPs per sample: "
                + ", ".join(f"{s}²: {g:.0f}" for s, g in gflops.items())
                + "; dense peak (best of matmul, 3×3 conv) "
                + ", ".join(f"{p}: {t:.2f} TFLOP/s" for p, t in peaks.items()),
                header, [row_of(r) for r in records])
    if skipped:
        print("out of memory (for at least one contender), not measured: " + "; ".join(skipped))
    switches = None if why_not else dataclasses.asdict(ReferenceSwitches.fast(device, compile=args.compile))
    write_results("unet", {"benchmark": "unet", **env, "dense_peak_tflops": dense, "reference_missing": why_not,
                           "compile_asked": args.compile, "reference_fast_switches": switches,
                           "forward_gflops_per_sample": gflops, "repeats": repeats, "records": records,
                           "out_of_memory": skipped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
