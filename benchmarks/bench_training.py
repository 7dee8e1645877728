"""Training throughput (samples/s) of the regression and the diffusion step, loader included.

The data are a synthetic paper-like dataset on disk (12 coarse channels on 0.25° → a fine grid, 4 targets,
see bench_loader.py) read through `DownscalingDataset` and a DataLoader; each contender's step is: next
batch, loss, backward, AdamW step. The diffusion step includes the frozen regression forward that gives the
residual. Contenders take steps turn about (A B A B …) from one loader; the median step time is reported
as samples/s, with the ratio corrdiff / reference of samples/s (above 1: corrdiff faster); corrdiff
runs both its plain path and its fast path (channels-last), the reference both plain and with its own fast
switches (channels-last, Apex GroupNorm where importable). With --compile the diffusion denoisers of both
fast contenders are compiled, and the JSON records whether they really ran compiled (`ran_compiled`).

usage: python benchmarks/bench_training.py [--quick] [--device cpu|cuda] [--size 448] [--batch 8]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_loader import INPUTS, TARGETS, write_data  # noqa: E402
from common import environment, interleaved, pick_device, print_table, write_results  # noqa: E402
from contenders import config_for, ours, reference, reference_available, ReferenceSwitches  # noqa: E402

from corrdiff.data import compute_stats, DownscalingDataset, load_spec  # noqa: E402
from corrdiff.diffusion import SamplerConfig  # noqa: E402
from corrdiff.fast_path import autocast, FastPath  # noqa: E402


def batches(dataset, batch_size, workers, device):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0,
                                         collate_fn=lambda b: (torch.stack([s.input for s in b]),
                                                               torch.stack([s.target for s in b])),
                                         generator=torch.Generator().manual_seed(0))
    while True:
        for condition, target in loader:
            yield condition.to(device, non_blocking=True), target.to(device, non_blocking=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None, help="fine grid side (default 448 on CUDA, 64 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="samples per step (default 8 on CUDA, 4 on CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per contender and step kind")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast contenders' denoisers")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    size = args.size or (448 if on_cuda else 32 if args.quick else 64)
    batch = args.batch or (8 if on_cuda else 4)
    repeats = args.repeats or (10 if on_cuda else 2 if args.quick else 3)
    bf16 = on_cuda
    why_not = reference_available()
    if why_not:
        print(f"reference not importable ({why_not}); timing corrdiff alone. Run `make bench` for the comparison.")
    env = environment(device)
    config = config_for((size, size)).replace(in_channels=len(INPUTS), out_channels=len(TARGETS))
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(write_data(Path(tmp), times=max(64, batch * (repeats + 2) * 2), size=size))
        stats = compute_stats(spec, progress=False)
        data = batches(DownscalingDataset(spec, "train", stats=stats), batch, args.workers, device)
        contenders = {"corrdiff": ours(config, device, SamplerConfig())}
        # corrdiff's fast path for training, as `channels_last: auto` gives it (bf16 from the step's autocast)
        contenders["corrdiff fast"] = ours(config, device, SamplerConfig(),
                                          FastPath(channels_last=True, compile=args.compile))
        if not why_not:
            contenders["reference"] = reference(config, device, SamplerConfig())
            contenders["reference fast"] = reference(config, device, SamplerConfig(),
                                                     ReferenceSwitches.fast(device, compile=args.compile))
        for kind in ("regression", "diffusion"):
            def step_of(contender):
                net = contender.regression if kind == "regression" else contender.denoiser
                loss_fn = contender.regression_loss if kind == "regression" else contender.diffusion_loss
                optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
                net.train()
                if kind == "diffusion":
                    contender.regression.eval().requires_grad_(False)

                def step():
                    condition, target = next(data)
                    with autocast(bf16, device):
                        loss = loss_fn(condition, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                return step

            try:
                timed = interleaved({name: step_of(c) for name, c in contenders.items()}, repeats, device)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"{kind} step at batch {batch}: out of memory, skipped (try --batch 4)", flush=True)
                continue
            record = {"kind": kind, "size": size, "batch": batch, "precision": "bf16" if bf16 else "fp32",
                      "workers": args.workers}
            for name, contender in contenders.items():
                record[name] = {**timed[name], "samples_per_s": batch / timed[name]["median_s"],
                                "ran_compiled": contender.ran_compiled() if kind == "diffusion" else None}
            ref = record.get("reference", {}).get("samples_per_s")
            ref_fast = record.get("reference fast", {}).get("samples_per_s")
            fast = record["corrdiff fast"]["samples_per_s"]
            record["speedup_ours_over_reference"] = ref and record["corrdiff"]["samples_per_s"] / ref
            record["speedup_fast_over_reference"] = ref and fast / ref
            record["speedup_fast_over_reference_fast"] = ref_fast and fast / ref_fast
            records.append(record)
            rows.append([f"{kind} {size}² b{batch}", f"{record['corrdiff']['samples_per_s']:.2f}", f"{fast:.2f}",
                         f"{ref:.2f}" if ref else "-", f"{ref_fast:.2f}" if ref_fast else "-",
                         f"{record['speedup_ours_over_reference']:.2f}" if ref else "-",
                         f"{record['speedup_fast_over_reference']:.2f}" if ref else "-",
                         f"{record['speedup_fast_over_reference_fast']:.2f}" if ref_fast else "-"])
            print(" | ".join(rows[-1]), flush=True)
    print_table(f"Training steps with the loader ({args.workers} workers, {'bf16' if bf16 else 'fp32'}) on "
                f"{env['device']}, torch {env['torch']}, {env['date']}; median of {repeats} interleaved steps",
                ["step", "corrdiff samples/s", "fast samples/s", "reference samples/s", "ref fast samples/s",
                 "ours/ref speed", "fast/ref speed", "fast/ref fast speed"], rows)
    write_results("training", {"benchmark": "training", **env, "reference_missing": why_not, "repeats": repeats,
                               "compile_asked": args.compile, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
