"""Shared pieces of the benchmarks: device facts, interleaved timing, peak memory, tables and JSON results."""

import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(os.environ.get("CORRDIFF_BENCH_RESULTS", Path(__file__).parent / "results"))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """What a result needs beside it to be compared with another: device, threads, versions, date."""
    facts = {"date": dt.date.today().isoformat(), "device": device_name(device), "device_type": device.type,
             "torch": torch.__version__, "python": sys.version.split()[0], "cpu_threads": torch.get_num_threads()}
    try:
        import physicsnemo

        facts["physicsnemo"] = physicsnemo.__version__
    except ImportError:
        facts["physicsnemo"] = None
    return facts


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(calls: dict, repeats: int, device: torch.device, warmup: int = 1) -> dict[str, dict]:
    """Time each call `repeats` times in turns (A B A B …) after `warmup` untimed turns.

    Interleaving puts slow drifts of the machine (clock, other load) on every contender alike.
    Returns per name the median and all times in seconds.
    """
    times = {name: [] for name in calls}
    for turn in range(warmup + repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            if turn >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t} for name, t in times.items()}


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def cpu_peak_mib(call) -> float | None:
    """Peak resident memory one call adds, MiB: Linux's high-water mark (VmHWM), reset before the call.

    Pages the allocator already holds from earlier calls are reused without showing here, so this is the
    memory the call needs beyond what the process had resident; None where /proc cannot do this.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
        before = _status_mib("VmRSS:")
        call()
        return _status_mib("VmHWM:") - before
    except (OSError, KeyError):
        return None


def peak_mib(call, device: torch.device) -> float | None:
    """Peak memory of one call on `device`, MiB above what was in use before it (see the two functions)."""
    return cuda_peak_mib(call, device) if device.type == "cuda" else cpu_peak_mib(call)


def cuda_peak_mib(call, device: torch.device) -> float:
    """Peak CUDA memory allocated by one call, MiB above what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _best_rate(call, flops: float, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e12


def dense_peak_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """Measured throughput (TFLOP/s) of a large matrix product and of a large 3×3 convolution, and the best.

    The best is the yardstick for a network's achieved fraction. Both are measured because on some CPUs
    the convolution library (oneDNN) runs far closer to the hardware's peak than the BLAS matrix product.
    """
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    with torch.no_grad():
        matmul = _best_rate(lambda: a @ b, 2 * size**3, device, repeats)
        batch, channels, side = (8, 512, 64) if device.type == "cuda" else (1, 256, 64)
        x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype)
        conv_rate = _best_rate(lambda: conv(x), 2 * batch * side * side * channels * channels * 9, device, repeats)
    return {"matmul": matmul, "conv3x3": conv_rate, "best": max(matmul, conv_rate)}


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A plain aligned table (numbers right-aligned)."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def write_results(name: str, payload: dict) -> Path:
    """benchmarks/results/<name>.json, or under $CORRDIFF_BENCH_RESULTS."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    print(f"\nwritten {path}")
    return path


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(ours: float | None, reference: float | None) -> str:
    return "-" if not ours or not reference else f"{ours / reference:.2f}"
