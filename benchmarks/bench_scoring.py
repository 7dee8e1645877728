"""Scoring at the paper's scale: 100 times × 32 members × 448×448 × 4 variables (10 GiB of float32).

Writes a synthetic ensemble in generate's layout (Zarr by default, as multi-GPU generation writes; or NetCDF
with generate's zlib compression) and a truth store, then scores it in a fresh process with
`corrdiff.evaluation.evaluate` — point scores over every time, spectra and distributions over 16 — and
records the wall time and the peak RSS of that process. Also times the hand-written sorted-member CRPS
against `scoringrules.crps_ensemble` on the same (32, 448, 448) fields and checks that they agree.
Prints a table and writes benchmarks/results/scoring.json.

usage: python benchmarks/bench_scoring.py [--quick] [--format zarr|netcdf] [--times N] [--members M]
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

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

VARIABLES = {"t2m": ("K", 290.0, 3.0), "u10": ("m s-1", 0.0, 5.0), "v10": ("m s-1", 0.0, 5.0), "refl": ("dBZ", 10.0, 8.0)}
RESULTS = Path(__file__).parent / "results" / "scoring.json"


def field_block(block_info=None, kind="truth", seed=0, offset=0.0, scale=1.0):
    """One time of synthetic data: a mean field plus noise, seeded by (variable, time, kind), so that truth
    and members share the mean and are exchangeable (a calibrated ensemble)."""
    location = block_info[None]["array-location"]
    t = location[0][0]
    shape = tuple(stop - start for start, stop in location)
    mean = np.random.default_rng([seed, t, 0]).standard_normal(shape[-2:], dtype=np.float32)
    noise_rng = np.random.default_rng([seed, t, {"truth": 1, "members": 2, "mean": 3}[kind]])
    if kind == "mean":
        values = mean[None]
    elif kind == "truth":
        values = mean[None] + 0.5 * noise_rng.standard_normal(shape[-2:], dtype=np.float32)[None]
    else:
        values = mean[None, None] + 0.5 * noise_rng.standard_normal(shape[1:], dtype=np.float32)[None]
    return (offset + scale * values).astype(np.float32)


def write_data(folder: Path, times: int, members: int, size: int, fmt: str) -> tuple[Path, Path]:
    """(ensemble, truth) on disk; written chunk by chunk, two threads."""
    stamps = pd.date_range("2022-07-01", periods=times, freq="h").values.astype("datetime64[ns]")
    j, i = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    coords = {"time": stamps, "lat": (("y", "x"), 20.0 + 0.018 * j, {"units": "degrees_north"}),
              "lon": (("y", "x"), 118.0 + 0.018 * i, {"units": "degrees_east"})}
    ensemble, truth = {}, {}
    for seed, (name, (units, offset, scale)) in enumerate(VARIABLES.items()):
        attrs = {"units": units, "long_name": name}
        options = {"seed": seed, "offset": offset, "scale": scale, "dtype": np.float32}
        ensemble[name] = (("time", "member", "y", "x"), da.map_blocks(
            field_block, kind="members", chunks=((1,) * times, (members,), (size,), (size,)), **options), attrs)
        ensemble[f"{name}_regression"] = (("time", "y", "x"), da.map_blocks(
            field_block, kind="mean", chunks=((1,) * times, (size,), (size,)), **options), attrs)
        truth[name] = (("time", "y", "x"), da.map_blocks(
            field_block, kind="truth", chunks=((1,) * times, (size,), (size,)), **options), attrs)
    ensemble["generation_complete"] = (("time",), np.ones(times, np.int8))
    ens = xr.Dataset(ensemble, {**coords, "member": np.arange(members)}, {"grid_spacing_km": 2.0})
    tru = xr.Dataset(truth, coords, {"grid_spacing_km": 2.0})
    suffix = ".zarr" if fmt == "zarr" else ".nc"
    paths = folder / f"ensemble{suffix}", folder / f"truth{suffix}"
    with dask.config.set(scheduler="threads", num_workers=2):
        for ds, path in zip((ens, tru), paths):
            if fmt == "zarr":
                ds.to_zarr(path, zarr_format=3, consolidated=False)
            else:  # as corrdiff.inference.writer: zlib level 1, one time per chunk
                ds.to_netcdf(path, engine="netcdf4", encoding={
                    v: {"zlib": True, "complevel": 1} for v in ds.data_vars if v != "generation_complete"})
    return paths


def score_in_child(ensemble: str, truth: str, queue) -> None:
    """Scoring in a fresh process, so that its peak memory is the scoring's own, not the data writer's."""
    from corrdiff.evaluation import evaluate

    start = time.perf_counter()
    result = evaluate(ensemble, truth, distributions=False)
    point = time.perf_counter() - start
    start = time.perf_counter()
    full = evaluate(ensemble, truth)
    both = time.perf_counter() - start
    scores = full.scores.sel(model="corrdiff")
    queue.put({"point_s": point, "full_s": both, "crps": scores["crps"].values.tolist(),
               "spread_skill": scores["spread_skill"].values.tolist(), "points": int(result.scores["count"].sum())})


def crps_speed(ensemble: Path, truth: Path, repeats: int = 3) -> dict:
    """Seconds per (32, 448, 448) field for the sorted CRPS and scoringrules, and their largest difference."""
    from corrdiff.evaluation.metrics import crps_ensemble, crps_scoringrules
    from corrdiff import ensemble_file

    ens, tru = ensemble_file.open(ensemble), ensemble_file.open(truth)
    timings = {"sorted": [], "scoringrules": []}
    worst = 0.0
    for name in VARIABLES:
        members = ens[name].isel(time=0).values
        obs = tru[name].isel(time=0).values
        results = {}
        for method, function in (("sorted", crps_ensemble), ("scoringrules", crps_scoringrules)):
            best = np.inf
            for _ in range(repeats):
                start = time.perf_counter()
                results[method] = function(obs, members)
                best = min(best, time.perf_counter() - start)
            timings[method].append(best)
        worst = max(worst, float(np.max(np.abs(results["sorted"] - results["scoringrules"]) / np.mean(results["scoringrules"]))))
    return {"sorted_s": float(np.mean(timings["sorted"])), "scoringrules_s": float(np.mean(timings["scoringrules"])),
            "max_relative_difference": worst, "field": list(ens[next(iter(VARIABLES))].shape[1:])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 times × 8 members × 128² (a smoke test)")
    parser.add_argument("--format", choices=["zarr", "netcdf"], default="zarr")
    parser.add_argument("--times", type=int, default=None)
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)
    times = args.times or (10 if args.quick else 100)
    members = args.members or (8 if args.quick else 32)
    size = args.size or (128 if args.quick else 448)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS.parent) as tmp:  # on disk (not a tmpfs /tmp): 10 GiB
        folder = Path(tmp)
        start = time.perf_counter()
        ensemble, truth = write_data(folder, times, members, size, args.format)
        write_s = time.perf_counter() - start
        on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(target=score_in_child, args=(str(ensemble), str(truth), queue))
        child.start()
        scored = queue.get()
        child.join()
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        crps = crps_speed(ensemble, truth)
    data_gib = times * members * size * size * len(VARIABLES) * 4 / 2**30
    rows = [
        ("ensemble written", f"{write_s:.1f} s", f"{args.format}, {on_disk / 2**30:.2f} GiB on disk with truth"),
        ("score: point scores", f"{scored['point_s']:.1f} s", f"{times} times × {members} members × {size}² × "
                                                              f"{len(VARIABLES)} variables = {data_gib:.1f} GiB"),
        ("score: + spectra, distributions", f"{scored['full_s']:.1f} s", "as `corrdiff score` (16 times for spectra)"),
        ("  peak RSS of the scoring process", f"{peak_mib:.0f} MiB", "dask chunks over time, 2 threads"),
        ("CRPS, sorted members (ours)", f"{crps['sorted_s'] * 1e3:.0f} ms", f"per {members}×{size}² field"),
        ("CRPS, scoringrules 0.10 (qd)", f"{crps['scoringrules_s'] * 1e3:.0f} ms",
         f"{crps['scoringrules_s'] / crps['sorted_s']:.1f}× slower; max rel. difference {crps['max_relative_difference']:.1e}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nscoring benchmark ({platform.machine()}, {multiprocessing.cpu_count()} CPUs)")
    for name, result, note in rows:
        print(f"  {name:<{width}}  {result:>10}  {note}")
    print(f"  CorrDiff CRPS per variable: {np.round(scored['crps'], 4).tolist()}, "
          f"spread/skill: {np.round(scored['spread_skill'], 3).tolist()}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "scoring", "date": dt.date.today().isoformat(), "device": platform.machine(),
        "cpus": multiprocessing.cpu_count(), "python": platform.python_version(), "format": args.format,
        "times": times, "members": members, "size": size, "variables": len(VARIABLES), "quick": args.quick,
        "write_s": write_s, "score_point_s": scored["point_s"], "score_full_s": scored["full_s"],
        "peak_rss_mib": peak_mib, "crps": crps,
        "rows": [{"name": n.strip(), "result": r, "note": note} for n, r, note in rows]}, indent=1))
    print(f"written: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
