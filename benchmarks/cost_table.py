"""Cost of one forecast hour: corrdiff's measured sampling against the regional model it replaces (WRF).

Reads the sampling benchmark (`benchmarks/results/sampling.json`, written by bench_sampling.py) and prints
the Markdown table of docs/benchmarks.md ("Cost against WRF"), so the comparison follows the latest run.

    corrdiff seconds per member at the paper's domain  t = t_measured × (448² / size²)      (1)
    speed-up (wall clock)                              = T_wrf / (t × members)
    core-seconds (CPU) or device-seconds (GPU)         = t × members × (threads | 1)
    energy per forecast hour                           E_wrf = T_wrf × 928 × P_core,   E = t × members × P_device
    energy ratio                                       = E_wrf / E

T_wrf = 91.38 s of wall time per forecast hour on 928 CPU cores for the CorrDiff paper's Taiwan domain (the
figure the paper reports for the WRF run it replaces). (1) scales a measurement on a smaller grid by pixel count:
the UNet's convolutions cost the same per pixel, so this holds to within the cost of the lowest-resolution
attention; it is exact when the benchmark ran at 448 (`--size 448`, the default on CUDA). One forecast hour is
one output time; the regression mean (one UNet forward, against the 35 evaluations of 18 Heun steps) is left out.

usage: python benchmarks/cost_table.py [--json benchmarks/results/sampling.json] [--members 1]
       [--cpu-watts-per-core 15] [--gpu-watts 700] [--contender "corrdiff fast"]
"""

import argparse
import json
import sys
from pathlib import Path

WRF_SECONDS_PER_HOUR = 91.38  # wall time per forecast hour, the paper's Taiwan domain (2 km)
WRF_CORES = 928
PAPER_SIDE = 448  # the paper's fine grid: 448 × 448 at 2 km
RESULTS = Path(__file__).parent / "results" / "sampling.json"


def best_record(results: dict, contender: str) -> dict:
    """The batch size with the lowest seconds per member for `contender` (members per call are free to choose)."""
    rows = [r for r in results.get("records", []) if contender in r and r[contender].get("per_member_s")]
    if not rows:
        raise SystemExit(f"no {contender!r} timing in the sampling results; contenders: "
                         f"{sorted({k for r in results.get('records', []) for k in r if isinstance(r[k], dict)})}")
    return min(rows, key=lambda r: r[contender]["per_member_s"])


def cost_rows(results: dict, contender: str, members: int, cpu_watts_per_core: float, gpu_watts: float) -> dict:
    """The numbers of the table: WRF's and corrdiff's seconds, core- or device-seconds and joules per forecast hour."""
    record = best_record(results, contender)
    on_gpu = results.get("device_type") == "cuda"
    per_member = record[contender]["per_member_s"] * (PAPER_SIDE / record["size"]) ** 2
    seconds = per_member * members
    threads = 1 if on_gpu else int(results.get("cpu_threads", 1))
    watts = gpu_watts if on_gpu else cpu_watts_per_core * threads
    wrf_joules = WRF_SECONDS_PER_HOUR * WRF_CORES * cpu_watts_per_core
    return {"device": results.get("device", "?"), "date": results.get("date", "?"), "on_gpu": on_gpu,
            "threads": threads, "measured_size": record["size"], "batch": record["batch"], "steps": record["steps"],
            "per_member_s": per_member, "seconds": seconds, "resource_seconds": seconds * threads,
            "joules": seconds * watts, "watts": watts, "wrf_joules": wrf_joules,
            "speedup": WRF_SECONDS_PER_HOUR / seconds, "energy_ratio": wrf_joules / (seconds * watts),
            "core_seconds_ratio": None if on_gpu else WRF_SECONDS_PER_HOUR * WRF_CORES / (seconds * threads)}


def markdown(c: dict, members: int, cpu_watts_per_core: float) -> str:
    unit = "GPU-s" if c["on_gpu"] else "core-s"
    scaled = "" if c["measured_size"] == PAPER_SIDE else f", scaled from {c['measured_size']}² by pixel count"
    lines = [
        "| run | wall s / forecast hour | compute | energy / forecast hour |",
        "|---|---|---|---|",
        f"| WRF, paper's Taiwan domain ({WRF_CORES} CPU cores) | {WRF_SECONDS_PER_HOUR:.2f} | "
        f"{WRF_SECONDS_PER_HOUR * WRF_CORES:,.0f} core-s | {c['wrf_joules'] / 1e6:.2f} MJ "
        f"({cpu_watts_per_core:g} W/core) |",
        f"| corrdiff, {members} member{'s' if members > 1 else ''}, 448² ({c['device']}, "
        f"{'1 GPU' if c['on_gpu'] else str(c['threads']) + ' threads'}; {c['steps']} Heun steps, {c['batch']} per "
        f"call{scaled}) | "
        f"{c['seconds']:.1f} | {c['resource_seconds']:,.0f} {unit} | {c['joules'] / 1e3:.1f} kJ ({c['watts']:g} W) |",
    ]
    ratios = [f"wall-clock speed-up {c['speedup']:.3g}×", f"energy ratio {c['energy_ratio']:.3g}×"]
    if c["core_seconds_ratio"] is not None:
        ratios.insert(1, f"core-seconds ratio {c['core_seconds_ratio']:.3g}×")
    return "\n".join(lines) + "\n\nWRF / corrdiff: " + ", ".join(ratios) + f" (measured {c['date']})."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS, help="sampling results of bench_sampling.py")
    parser.add_argument("--contender", default="corrdiff fast", help="whose timing: corrdiff or 'corrdiff fast'")
    parser.add_argument("--members", type=int, default=1, help="ensemble members per forecast hour")
    parser.add_argument("--cpu-watts-per-core", type=float, default=15.0,
                        help="power per CPU core, node share included (WRF's cores and a CPU benchmark's)")
    parser.add_argument("--gpu-watts", type=float, default=700.0, help="power of the GPU (H100 SXM board limit)")
    args = parser.parse_args(argv)
    if not args.json.is_file():
        print(f"{args.json}: no sampling results; run `python benchmarks/bench_sampling.py` first", file=sys.stderr)
        return 2
    results = json.loads(args.json.read_text())
    cost = cost_rows(results, args.contender, args.members, args.cpu_watts_per_core, args.gpu_watts)
    print(markdown(cost, args.members, args.cpu_watts_per_core))
    return 0


if __name__ == "__main__":
    sys.exit(main())
