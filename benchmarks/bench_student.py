"""Few-step student: seconds per ensemble member, the teacher's samplers against the consistency student, one run.

One member is what generation draws for one time: the regression forward (the mean), then the residual sampled
by the denoiser (`corrdiff.diffusion.downscale_ensemble`, both networks on generation's fast path for the
device). Contenders, all with the same network weights (only time is measured, so they are random):
  - teacher `dpmpp_2m`, loglinear, 7 steps (7 NFE): the demo's sampler, and `corrdiff tune`'s best on the demo;
  - teacher `heun`, karras, 18 steps (35 NFE): the paper's;
  - student `consistency` at 1, 2 and 4 NFE, the sampler a student checkpoint recommends (loglinear levels):
    the same network under `ConsistencyPrecond` instead of `EDMPrecond`.
They take turns (A B C … A B C …) after one warm-up turn; the table gives the median seconds per member and
the speed-up against teacher `dpmpp_2m` 7 NFE (above 1: faster). Default grids: 64² and 448² with the `tiny`
preset on the CPU, 448² with the `paper` preset on CUDA.

usage: python benchmarks/bench_student.py [--quick] [--device cpu|cuda] [--preset tiny|paper] [--sizes 64 448]
           [--repeats N] [--repeats-large N]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, fmt_s, interleaved, pick_device, print_table, write_results  # noqa: E402
from contenders import config_for  # noqa: E402

from corrdiff.config import DiffusionSection, DistillSection  # noqa: E402
from corrdiff.diffusion import (ConsistencyPrecond, diffusion_network, DiffusionCondition,  # noqa: E402
                                downscale_ensemble, EDMPrecond, SamplerConfig)
from corrdiff.fast_path import FastPath, prepare_denoiser, to_channels_last  # noqa: E402
from corrdiff.models import UNetConfig  # noqa: E402

BASELINE = "teacher dpmpp_2m"
LARGE = 256  # grids with a side at least this take --repeats-large turns


def samplers(student_nfe: list[int]) -> dict[str, tuple[str, SamplerConfig]]:
    """Each contender's name: (which network samples, its sampler). The student's is the one its checkpoint
    recommends (`DistillSection.recommended_sampler`) at each NFE."""
    distill = DistillSection()
    cases = {BASELINE: ("teacher", SamplerConfig(solver="dpmpp_2m", schedule="loglinear", num_steps=7)),
             "teacher heun": ("teacher", SamplerConfig(solver="heun", schedule="karras", num_steps=18))}
    for nfe in student_nfe:
        recommended = {**distill.recommended_sampler(), "num_steps": nfe}
        cases[f"student consistency {nfe}"] = ("student", SamplerConfig(**recommended))
    return cases


def networks(config: UNetConfig, device: torch.device, fast: FastPath, seed: int = 0) -> dict[str, torch.nn.Module]:
    """The regression, the teacher (EDMPrecond) and the student (ConsistencyPrecond around the teacher's own
    network, so the same weights), frozen and on `fast` as generation puts them (`inference.downscaling.prepare`)."""
    torch.manual_seed(seed)
    sigma_data = DiffusionSection().sigma_data
    regression = config.build_regression().to(device).eval()
    teacher = EDMPrecond(diffusion_network(config), sigma_data=sigma_data).to(device).eval()
    student = ConsistencyPrecond(teacher.net, sigma_data, DistillSection().sigma_min).to(device).eval()
    if fast.channels_last:
        to_channels_last(regression)
    return {"regression": regression, "teacher": prepare_denoiser(teacher, fast),
            "student": prepare_denoiser(student, fast)}


def time_grid(preset: str, size: int, device: torch.device, cases: dict, repeats: int) -> list[dict]:
    """One record per contender at a size² grid: NFE, median seconds per member, all times, speed-up."""
    config = config_for((size, size), preset)
    nets = networks(config, device, FastPath.resolve(device))
    condition = DiffusionCondition.from_unet(config)
    inputs = torch.randn(1, config.in_channels, size, size, generator=torch.Generator().manual_seed(1)).to(device)

    def member(network: str, sampler: SamplerConfig):
        return lambda: downscale_ensemble(nets["regression"], nets[network], condition, inputs, 1, 0, sampler)

    timed = interleaved({name: member(*case) for name, case in cases.items()}, repeats, device)
    baseline = timed[BASELINE]["median_s"]
    return [{"preset": preset, "size": size, "contender": name, "network": network, "solver": sampler.solver,
             "schedule": sampler.schedule, "num_steps": sampler.num_steps, "nfe": sampler.network_evaluations,
             "per_member_s": timed[name]["median_s"], "times_s": timed[name]["times_s"],
             "speedup_vs_dpmpp_2m_7": baseline / timed[name]["median_s"]}
            for name, (network, sampler) in cases.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--preset", default=None, help="network preset (default: paper on CUDA, tiny on the CPU)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="square grid sides (default 448 on "
                        "CUDA, 64 448 on the CPU)")
    parser.add_argument("--student-nfe", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=None, help="timed turns (default 5; 1 with --quick)")
    parser.add_argument("--repeats-large", type=int, default=None,
                        help=f"timed turns on grids of side ≥ {LARGE} (default: 3 on the CPU, else --repeats)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny preset at 16², one turn")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    preset = args.preset or ("paper" if on_cuda and not args.quick else "tiny")
    sizes = args.sizes or ([16] if args.quick else [448] if on_cuda else [64, 448])
    repeats = args.repeats or (1 if args.quick else 5)
    repeats_large = args.repeats_large or (repeats if on_cuda or args.quick else min(repeats, 3))
    env = environment(device)
    cases = samplers(args.student_nfe)
    records, rows = [], []
    for size in sizes:
        turns = repeats_large if size >= LARGE else repeats
        try:
            grid = time_grid(preset, size, device, cases, turns)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"{size}²: out of memory, skipped", flush=True)
            continue
        for r in grid:
            r["repeats"] = turns
            rows.append([f"{size}²", r["contender"], r["nfe"], fmt_s(r["per_member_s"]),
                         f"{r['speedup_vs_dpmpp_2m_7']:.2f}×"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
        records += grid
    print_table(f"Seconds per member (regression + sampled residual, 1 member), preset {preset}, on {env['device']}, "
                f"torch {env['torch']}, {env['date']}; median of {repeats} interleaved turns ({repeats_large} at "
                f"≥ {LARGE}²) after one warm-up", ["grid", "sampler", "NFE", "s / member", "speed-up vs dpmpp_2m 7"],
                rows)
    write_results("student", {"benchmark": "student", **env, "preset": preset, "members": 1,
                              "baseline": BASELINE, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
