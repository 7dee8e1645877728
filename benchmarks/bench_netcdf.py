"""Ensemble NetCDF files: seconds to write one time (as `corrdiff generate` does) and to read one member's field,
with corrdiff's chunks (one time × one member × the whole field, `ensemble_file.encoding`) and with netCDF-C's
default chunks (the same file, zlib level 1, chunk sizes left to the library, as corrdiff wrote before).

Both files are laid out by `ensemble_file.template` and `ensemble_file.write`; each time is then written through
netCDF4 the way `inference/writer.py` writes it (every channel's members and regression mean, sync, flag, sync).
Reads are of random (time, member) fields of one channel, from a freshly opened file (the OS page cache is not
dropped: this times decompression and chunk lookup, not the disk).

usage: python benchmarks/bench_netcdf.py [--quick] [--times 8] [--members 32] [--channels 4] [--size 448]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, fmt_s, print_table, write_results  # noqa: E402

from corrdiff import ensemble_file  # noqa: E402
from corrdiff.ensemble_file import FLAG, regression_name  # noqa: E402


def layout(times: int, members: int, channels: int, size: int):
    lat, lon = np.meshgrid(np.linspace(20.0, 26.0, size), np.linspace(118.0, 124.0, size), indexing="ij")
    axis = np.datetime64("2021-01-01T00", "ns") + np.arange(times) * np.timedelta64(1, "h")
    names = [f"c{k}" for k in range(channels)]
    return ensemble_file.template(axis, members, lat, lon, names, {n: {"units": "K"} for n in names}), names


def create(path: Path, ds, chunked: bool) -> None:
    """The empty file: corrdiff's encoding, or the same without `chunksizes` (netCDF-C's default chunks)."""
    encoding = ensemble_file.encoding(ds, "netcdf")
    if not chunked:
        encoding = {name: {k: v for k, v in enc.items() if k != "chunksizes"} for name, enc in encoding.items()}
    ds.to_netcdf(path, engine="netcdf4", encoding=encoding)


def write_times(path: Path, names: list[str], fields: np.ndarray, means: np.ndarray) -> list[float]:
    """Seconds to write each time: fields (time, member, channel, y, x), means (time, channel, y, x)."""
    seconds = []
    with netCDF4.Dataset(path, "a") as nc:
        for index in range(len(fields)):
            start = time.perf_counter()
            for c, name in enumerate(names):
                nc[name][index] = fields[index, :, c]
                nc[regression_name(name)][index] = means[index, c]
            nc.sync()
            nc[FLAG][index] = 1
            nc.sync()
            seconds.append(time.perf_counter() - start)
    return seconds


def read_fields(path: Path, name: str, picks) -> list[float]:
    """Seconds to read each (time, member) field of `name` from a freshly opened file."""
    seconds = []
    for t, m in picks:
        start = time.perf_counter()
        with netCDF4.Dataset(path, "r") as nc:
            nc[name][t, m]
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=None, help="times in the file (default 8; --quick 3)")
    parser.add_argument("--members", type=int, default=None, help="ensemble members (default 32; --quick 4)")
    parser.add_argument("--channels", type=int, default=None, help="output channels (default 4; --quick 2)")
    parser.add_argument("--size", type=int, default=None, help="grid side, points (default 448; --quick 64)")
    parser.add_argument("--reads", type=int, default=None, help="single-field reads timed (default 20; --quick 5)")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary one)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    times = args.times or (3 if args.quick else 8)
    members = args.members or (4 if args.quick else 32)
    channels = args.channels or (2 if args.quick else 4)
    size = args.size or (64 if args.quick else 448)
    reads = args.reads or (5 if args.quick else 20)
    env = environment(torch.device("cpu"))
    rng = np.random.default_rng(0)
    fields = rng.standard_normal((times, members, channels, size, size), dtype=np.float32) + 280.0
    means = fields.mean(axis=1)
    picks = [(int(rng.integers(times)), int(rng.integers(members))) for _ in range(reads)]
    ds, names = layout(times, members, channels, size)

    records = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for label, chunked in (("corrdiff chunks (1 time × 1 member × field)", True), ("netCDF-C default chunks", False)):
            path = Path(folder) / f"{'chunked' if chunked else 'default'}.nc"
            create(path, ds, chunked)
            with netCDF4.Dataset(path) as nc:
                chunking = nc[names[0]].chunking()
            writes = write_times(path, names, fields, means)
            read = read_fields(path, names[0], picks)
            records.append({"method": label, "chunks": chunking if chunking != "contiguous" else None,
                            "write_per_time_s": statistics.median(writes), "write_total_s": sum(writes),
                            "read_field_s": statistics.median(read), "file_mib": path.stat().st_size / 2**20})
    rows = [[r["method"], "×".join(map(str, r["chunks"])) if r["chunks"] else "contiguous",
             fmt_s(r["write_per_time_s"]), fmt_s(r["write_total_s"]), fmt_s(r["read_field_s"]), f"{r['file_mib']:.0f}"]
            for r in records]
    print_table(f"ensemble NetCDF: {times} times × {members} members × {channels} channels × {size}² "
                f"({env['device']})", ["chunks", "chunk shape", "write/time", "write all", "read 1 field", "MiB"], rows)
    chunked, default = records
    speedup = {"write": default["write_per_time_s"] / chunked["write_per_time_s"],
               "read": default["read_field_s"] / chunked["read_field_s"]}
    print(f"\ncorrdiff's chunks: writes {speedup['write']:.1f}× and single-field reads {speedup['read']:.1f}× "
          "as fast as the default")
    write_results("netcdf", {"benchmark": "netcdf", **env, "times": times, "members": members, "channels": channels,
                             "size": size, "reads": reads, "speedup": speedup, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
