"""Data loader throughput at the paper's scale: 12 coarse channels on 36×36 → 448×448 fine grid, 4 targets.

Writes a synthetic ERA5-like coarse store (0.25°) and a 2 km-like fine store, then measures samples/s of
`DownscalingDataset` reading from disk (not cached in memory) with 0, 2 and 4 workers, and the time and peak
memory of `corrdiff data stats` (streamed). Prints a table and writes benchmarks/results/loader.json.

usage: python benchmarks/bench_loader.py [--quick] [--times N]
"""

import argparse
import datetime as dt
import json
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
import yaml

from corrdiff.data import compute_stats, DownscalingDataset, load_spec, Normalization

INPUTS = ["t2m", "u10", "v10", "tcwv"] + [f"{v}@{p}" for v in ("t", "u", "v", "z") for p in (500, 850)]
TARGETS = ["t2m", "u10", "v10", "refl"]


def write_data(folder: Path, times: int, size: int) -> Path:
    stamps = pd.date_range("2020-01-01", periods=times, freq="h")
    rng = np.random.default_rng(0)
    lat, lon = 28.75 - 0.25 * np.arange(36), 117.5 + 0.25 * np.arange(36)  # 36×36 at 0.25°, north to south
    levels = [500.0, 850.0]
    surface = [v for v in INPUTS if "@" not in v]
    upper = sorted({v.split("@")[0] for v in INPUTS if "@" in v})
    coarse = {name: (("time", "latitude", "longitude"), rng.normal(size=(times, lat.size, lon.size)).astype(np.float32))
              for name in surface}
    coarse |= {name: (("time", "level", "latitude", "longitude"),
                      rng.normal(size=(times, len(levels), lat.size, lon.size)).astype(np.float32)) for name in upper}
    xr.Dataset(coarse, coords={"time": stamps, "level": levels, "latitude": lat, "longitude": lon}).to_netcdf(
        folder / "coarse.nc")
    j, i = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    fine_lat, fine_lon = 20.1 + 0.0185 * j, 117.6 + 0.0185 * i  # ≈ 2 km, inside the coarse grid
    dims = ("time", "y", "x")
    fine = {name: (dims, rng.normal(size=(times, size, size)).astype(np.float32)) for name in TARGETS}
    xr.Dataset(fine, coords={"time": stamps, "lat": (("y", "x"), fine_lat), "lon": (("y", "x"), fine_lon)}).to_netcdf(
        folder / "fine.nc")
    spec = {"inputs": {"paths": "coarse.nc", "variables": INPUTS}, "targets": {"paths": "fine.nc", "variables": TARGETS},
            "splits": {"train": {"start": str(stamps[0]), "end": str(stamps[-1])}}, "load_into_memory": False}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def stats_in_child(spec_path: str, queue) -> None:
    """Statistics in a fresh process, so its peak memory is the streaming's own, not the data writer's."""
    start = time.perf_counter()
    compute_stats(load_spec(spec_path), progress=False)
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def loader_rate(dataset, workers: int, batches: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=lambda b: (torch.stack([s.input for s in b]),
                                                               torch.stack([s.target for s in b])),
                                         generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        inputs, _ = next(iterator)
        count += len(inputs)
    return count / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer times, for a smoke run")
    parser.add_argument("--times", type=int, default=None)
    parser.add_argument("--size", type=int, default=448)
    args = parser.parse_args(argv)
    times = args.times or (24 if args.quick else 96)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = write_data(Path(tmp), times, args.size)
        spec = load_spec(spec_path)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=stats_in_child, args=(str(spec_path), queue))
        child.start()
        seconds, rss = queue.get()
        child.join()
        data_mib = times * (len(INPUTS) * 36 * 36 + len(TARGETS) * args.size**2) * 4 / 2**20
        rows.append(("corrdiff data stats (streamed)", f"{seconds:.2f} s", f"{times / seconds:.1f} times/s"))
        rows.append(("  peak RSS of the stats process", f"{rss:.0f} MiB", f"data on disk: {data_mib:.0f} MiB"))
        stats = Normalization.load(spec.stats_path)
        dataset = DownscalingDataset(spec, "train", stats=stats)
        batches = 3 if args.quick else 8
        for workers in (0, 2, 4):
            rate = loader_rate(dataset, workers, batches, 4)
            rows.append((f"DownscalingDataset, {workers} workers", f"{rate:.1f} samples/s",
                         f"{len(INPUTS)} inputs → {args.size}² × {len(TARGETS)}"))
    print(f"\n{'measurement':<36} {'result':>16}   note")
    for name, result, note in rows:
        print(f"{name:<36} {result:>16}   {note}")
    out = Path(__file__).parent / "results" / "loader.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "loader", "date": dt.date.today().isoformat(), "device": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(), "torch": torch.__version__, "python": sys.version.split()[0],
        "times": times, "size": args.size, "rows": [dict(zip(("name", "result", "note"), r)) for r in rows],
    }, indent=1))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
