"""Patched diffusion training throughput with the regression mean μ recomputed every step and read from the cache.

Each contender runs corrdiff's training step (`DiffusionTask.loss`, backward, AdamW step) on random patches of
an in-memory dataset, batches drawn by a DataLoader with the training collate:
  recompute μ          the frozen regression runs on the whole domain for every sample of every step
  cached μ             μ read from `corrdiff.training.regression_cache` (built once beforehand, timed apart)
  cached μ, k patches  the same, with `patches_per_sample` k: one sample read and μ feed k patches
Steps are taken in turns (A B C A B C …); the median step time gives samples/s and patches/s. The cache's
one-off build time is reported beside it, with the number of steps after which it has paid for itself.

usage: python benchmarks/bench_regression_cache.py [--quick] [--device cpu|cuda] [--size 96] [--patch 32] [--batch 4]
"""

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, fmt_s, interleaved, pick_device, print_table, write_results  # noqa: E402

from corrdiff.config import DiffusionSection, ModelSection  # noqa: E402
from corrdiff.data import ChannelStats, Normalization, Sample  # noqa: E402
from corrdiff.seeding import Draws  # noqa: E402
from corrdiff.training import regression_cache  # noqa: E402
from corrdiff.training.batches import collate  # noqa: E402
from corrdiff.training.tasks import DiffusionTask  # noqa: E402

INPUTS, TARGETS = 12, 4  # the paper's Taiwan channels: 12 coarse inputs, 4 targets


@dataclass
class RandomFields(torch.utils.data.Dataset):
    """An in-memory PairedDataset of smooth random fields: input (C_in, H, W), target (C_out, H, W), normalised."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self):
        n, _, height, width = self.inputs.shape
        self.times = np.datetime64("2020-01-01T00", "ns") + np.arange(n) * np.timedelta64(1, "h")
        self.lat, self.lon = np.meshgrid(np.linspace(20, 26, height), np.linspace(118, 124, width), indexing="ij")
        self.input_channels = [f"in{c}" for c in range(self.inputs.shape[1])]
        self.target_channels = [f"out{c}" for c in range(self.targets.shape[1])]
        unit = lambda names: ChannelStats(names, np.zeros(len(names)), np.ones(len(names)))
        self.stats = Normalization(unit(self.input_channels), unit(self.target_channels))

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return Sample(self.inputs[index], self.targets[index], self.times[index])


def make_data(samples: int, size: int) -> RandomFields:
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(samples, INPUTS, 8, 8, generator=generator)
    inputs = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    noise = torch.randn(samples, TARGETS, size, size, generator=generator)
    return RandomFields(inputs, inputs[:, :TARGETS] + 0.1 * noise)


def contender(unet, regression, dataset, patch: int, per_sample: int, batch: int, device):
    """One step of patched diffusion training (next batch, loss, backward, AdamW step) as a call."""
    section = DiffusionSection(patch_shape=(patch, patch), patches_per_sample=per_sample, batch_size=batch)
    torch.manual_seed(0)
    task = DiffusionTask(unet, section, regression)
    net = task.net.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=collate, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    batches, step = iter(()), [0]

    def call():
        nonlocal batches
        try:
            condition, target = next(batches)
        except StopIteration:
            batches = iter(loader)
            condition, target = next(batches)
        step[0] += 1
        loss = task.loss(net, condition.to(device), target.to(device), None, Draws(step[0], device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None, help="fine grid side (default 448 on CUDA, 96 on CPU)")
    parser.add_argument("--patch", type=int, default=None, help="patch side (default 64 on CUDA, 32 on CPU)")
    parser.add_argument("--batch", type=int, default=4, help="samples per step")
    parser.add_argument("--patches", type=int, default=4, help="patches per sample of the third contender")
    parser.add_argument("--samples", type=int, default=None, help="training samples (default 4 × batch)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per contender")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    size = args.size or (448 if on_cuda else 48 if args.quick else 96)
    patch = args.patch or (64 if on_cuda else 16 if args.quick else 32)
    repeats = args.repeats or (10 if on_cuda else 2 if args.quick else 5)
    samples = args.samples or 4 * args.batch
    env = environment(device)

    dataset = make_data(samples, size)
    unet = ModelSection(preset="tiny", attn_resolutions=[]).unet_config((size, size), INPUTS, TARGETS)
    torch.manual_seed(1)
    regression = unet.build_regression().to(device).eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cached = regression_cache.ensure(Path(folder), dataset, regression, "0" * 64, device, batch=args.batch,
                                         progress=False)
        build_s = time.perf_counter() - start
        calls = {
            "recompute μ": (1, contender(unet, regression, dataset, patch, 1, args.batch, device)),
            "cached μ": (1, contender(unet, regression, cached, patch, 1, args.batch, device)),
            f"cached μ, {args.patches} patches/sample": (
                args.patches, contender(unet, regression, cached, patch, args.patches, args.batch, device)),
        }
        times = interleaved({name: call for name, (_, call) in calls.items()}, repeats, device)

    base = times["recompute μ"]["median_s"]
    records = []
    for name, (per_sample, _) in calls.items():
        step_s = times[name]["median_s"]
        records.append({"contender": name, "patches_per_sample": per_sample, "step_s": step_s,
                        "samples_per_s": args.batch / step_s, "patches_per_s": args.batch * per_sample / step_s,
                        "speedup_samples": base / step_s, "times_s": times[name]["times_s"]})
    saved = base - times["cached μ"]["median_s"]
    payback = build_s / saved if saved > 0 else None
    rows = [[r["contender"], fmt_s(r["step_s"]), f"{r['samples_per_s']:.1f}", f"{r['patches_per_s']:.1f}",
             f"{r['speedup_samples']:.2f}"] for r in records]
    print_table(f"patched diffusion training, {size}² domain, {patch}² patches, batch {args.batch} ({env['device']})",
                ["contender", "step", "samples/s", "patches/s", "× samples/s"], rows)
    print(f"\ncache build: {fmt_s(build_s)} for {samples} samples "
          f"({regression_cache.cache_bytes(dataset) / 2**20:.1f} MiB); "
          + (f"paid back after {payback:.0f} steps" if payback else "no step time saved"))
    write_results("regression_cache", {"benchmark": "regression_cache", **env, "size": size, "patch": patch,
                                       "batch": args.batch, "samples": samples, "cache_build_s": build_s,
                                       "payback_steps": payback, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
