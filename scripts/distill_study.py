"""Teacher against consistency student (issue 24; docs/sampling.md, "Few-step student"): on held-out times, the
teacher's best sampler and the student at 1, 2 and 4 network evaluations, each scored as `corrdiff tune` scores a
setting, and what the distillation cost against the diffusion training.

usage: python scripts/distill_study.py RUN_CONFIG [--split validation] [--times 16] [--members 8] [--nfe 1 2 4]
                                      [--student-sigma-min S | --student-tune FOLDER] [--every-checkpoint]
                                      [--time-steps N]
                                      [--cores N] [--out table.csv]
                                      [--set section.key=value ...]

The student is <run_dir>/distill: trained first with `corrdiff train distill`'s settings (the config's `distill:`
section and --set) when it holds no checkpoint yet, else taken as it is. The teacher's best sampler is the run's
recommendation for its diffusion checkpoint (<run_dir>/sampler.yaml, `corrdiff tune`) when there is one, else the
config's `sampler:` section. The student samples with its recommended sampler at each --nfe, ending its log-linear
levels at --student-sigma-min when given, or, with --student-tune, at the σ_min of each NFE's lowest fair CRPS in
that `corrdiff tune` folder of the student (tuned on the validation split; σ_min places the levels the student
re-noises to). Every row draws its members with the seeds generation uses, on the same times.

Columns (channel means; CRPS over the truth's standard deviation, as tune's crps_fair_norm):
  crps_fair_norm   fair CRPS / truth std          spread_skill   ≈ 1 calibrated
  power_2_4dx      members' power over truth's at wavelengths 2–4 grid spacings (1: the right texture)
  lsd              log-spectral distance (mean |log10| of the power ratio over all wavenumbers)
  s_per_member     seconds per member, regression included, median over times after an untimed pass
Then the wall-clock time of each training step from its metrics.csv (`elapsed_s`, summed over resumed segments),
and core-hours = that × --cores (the cores or GPUs each step ran on; give what yours had).

Those two times are only comparable when both runs had the machine alike. --time-steps N measures them side by
side instead: it trains N steps of the diffusion step (from scratch, against the run's regression) and N steps of
the distillation (of the run's teacher) one after the other in a temporary folder, with the settings of the run
config (sample checks, validation and checkpoints off), and prices each step's whole run at the seconds per step
of steps 10 to N: cost ratio = distill steps × its s/step over diffusion steps × its s/step.
"""

import argparse
import csv
import dataclasses
import sys
import tempfile
from pathlib import Path

from corrdiff import checkpoint as ckpt, sampler_file
from corrdiff.config import load_config
from corrdiff.data import DownscalingDataset, load_spec
from corrdiff.distributed import pick_device
from corrdiff.experiments.tuning import measure, on_generation_path, Run, scored_times
from corrdiff.experiments.tuning_scores import combined
from corrdiff.inference import downscale, Fingerprint, load_models
from corrdiff.training import train

COLUMNS = ("crps_fair_norm", "spread_skill", "power_2_4dx", "lsd", "s_per_member")


def student_folder(config) -> Path:
    """<run_dir>/distill, trained first when it holds no checkpoint."""
    folder = Path(config.run_dir) / "distill"
    if ckpt.read_pointer(folder / "checkpoints", "latest") is None:
        print(f"training the student in {folder} (corrdiff train distill)", file=sys.stderr)
        train("distill", config)
    return folder


def teacher_sampler(config, teacher_sha256: str):
    """The teacher's best sampler and where it came from."""
    tuned = sampler_file.recommended_sampler(config.run_dir, teacher_sha256)
    if tuned is not None:
        return tuned, f"{sampler_file.path_in(config.run_dir)} (corrdiff tune)"
    return config.sampler, "the run config's sampler section"


def prepared_run(config, regression, diffusion, dataset, truth, members: int, device) -> Run:
    """The networks of one diffusion checkpoint, on generation's fast path, patches and member batching."""
    models = load_models(regression, diffusion, device)
    _, patcher, batching = on_generation_path(config, models, dataset, members, device)
    return Run(models, truth, members, batching, patcher, Fingerprint({}))


def scored(run: Run, sampler) -> dict[str, float]:
    """The row of one setting (COLUMNS), after an untimed pass on the first time (lazy set-up is no one's cost)."""
    warm = run.truth
    run.batching.run(lambda size: downscale(run.models, warm.conditions[0], run.members, warm.seeds[0], sampler,
                                            size, run.patcher))
    scores, seconds, _ = measure(run, sampler)
    result = combined(scores.result(), run.truth.scale)
    return {"crps_fair_norm": float(result["crps_fair_norm"]), "spread_skill": float(result["spread_skill_mean"]),
            "power_2_4dx": float(result["power_ratio_mean"]), "lsd": float(result["lsd_mean"]),
            "s_per_member": seconds}


def elapsed(metrics_csv: Path) -> list[tuple[int, float]]:
    """(step, `elapsed_s`) of each row of a training step's metrics.csv, in order."""
    with open(metrics_csv, newline="") as f:
        return [(int(row["step"]), float(row["elapsed_s"])) for row in csv.DictReader(f)]


def wall_seconds(metrics_csv: Path) -> tuple[float, int]:
    """(wall-clock seconds, last step) of a training step from its metrics.csv: `elapsed_s` restarts at every
    resume, so the segments are summed."""
    total, previous, step = 0.0, 0.0, 0
    for step, seconds in elapsed(metrics_csv):
        if seconds < previous:  # a resumed run's first row
            total += previous
        previous = seconds
    return total + previous, step


def cost_rows(run_dir: Path, cores: float) -> list[tuple[str, int, float, float]]:
    """(step, steps, wall hours, core-hours) of the diffusion training and the distillation."""
    rows = []
    for kind in ("diffusion", "distill"):
        path = run_dir / kind / "metrics.csv"
        if path.exists():
            seconds, steps = wall_seconds(path)
            rows.append((kind, steps, seconds / 3600, seconds * cores / 3600))
    return rows


def tuned_sigma_min(folder: Path, nfe: int) -> float:
    """The σ_min of the lowest fair CRPS at `nfe` network evaluations in tune.csv of a `corrdiff tune` folder."""
    with open(folder / "tune.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["network_evaluations"]) == nfe]
    if not rows:
        sys.exit(f"error: {folder / 'tune.csv'} measured no setting at NFE {nfe}; tune it with --nfe {nfe}")
    return float(min(rows, key=lambda r: float(r["crps_fair_norm"]))["sigma_min"])


def seconds_per_step(config, kind: str, steps: int, overrides: list[str]) -> float:
    """Seconds per optimizer step of `kind` over steps 10 … `steps` of a fresh run in a temporary folder."""
    quiet = [f"{kind}.{key}={value}" for key, value in (("steps", steps), ("log_every", 10), ("sample_every", 0),
                                                        ("validate_every", 10**6), ("checkpoint_every", 10**6))]
    with tempfile.TemporaryDirectory() as folder:
        timed = load_config(config.source, overrides + quiet + [f"run_dir={folder}"])
        train(kind, timed, progress=False)
        seconds = dict(elapsed(Path(folder) / kind / "metrics.csv"))
    return (seconds[steps] - seconds[10]) / (steps - 10)


def side_by_side(config, steps: int, overrides: list[str]) -> dict[str, float]:
    """{kind: seconds per step} of the diffusion step and the distillation, timed one after the other."""
    run_dir = Path(config.run_dir)
    return {"diffusion": seconds_per_step(config, "diffusion", steps, overrides + [
                f"diffusion.regression_checkpoint={run_dir / 'regression'}"]),
            "distill": seconds_per_step(config, "distill", steps, overrides + [
                f"distill.teacher_checkpoint={run_dir / 'diffusion'}"])}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--times", type=int, default=16, help="evenly spaced times of the split (0: all)")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4], help="the student's network evaluations")
    parser.add_argument("--student-sigma-min", type=float, help="where the student's levels end (default: its "
                        "recommended sampler's)")
    parser.add_argument("--student-tune", type=Path, help="a `corrdiff tune` folder of the student: each --nfe "
                        "takes the sigma_min of its lowest fair CRPS there (tuned on another split)")
    parser.add_argument("--every-checkpoint", action="store_true", help="score every kept checkpoint of the "
                        "student (a learning curve; keep them with distill.keep_last), not only its best")
    parser.add_argument("--cores", type=float, default=1.0, help="cores (or GPUs) each training step ran on")
    parser.add_argument("--time-steps", type=int, default=0, help="time this many steps of each training step side "
                        "by side (at least 20; 0: only read the runs' own metrics.csv)")
    parser.add_argument("--out", type=Path, help="also write the table as CSV")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = parser.parse_args(argv)
    if args.time_steps and args.time_steps < 20:
        parser.error("--time-steps must be at least 20 (steps 10 to N are timed)")

    config = load_config(args.config, args.overrides)
    run_dir = Path(config.run_dir)
    distilled = student_folder(config)
    device = pick_device(config.device)
    teacher = ckpt.load_model(run_dir / "diffusion", kind="diffusion")
    student = ckpt.load_model(distilled, kind="diffusion")
    dataset = DownscalingDataset(load_spec(config.data), split=args.split, stats=teacher.meta.stats, with_target=True)
    truth = scored_times(dataset, args.times, config.generate.seed, device)
    best, source = teacher_sampler(config, teacher.sha256)
    rows = []
    teacher_run = prepared_run(config, run_dir / "regression", teacher.path, dataset, truth, args.members, device)
    rows.append({"model": "teacher", "step": teacher.meta.step, "solver": best.solver, "nfe": best.network_evaluations,
                 "sigma_min": best.sigma_min, **scored(teacher_run, best)})
    recommended = student.meta.student.recommended_sampler()
    if args.student_sigma_min is not None:
        recommended = dataclasses.replace(recommended, sigma_min=args.student_sigma_min)
    students = [student.path]
    if args.every_checkpoint:
        students = sorted((distilled / "checkpoints").glob("step-*"))
    for path in students:
        student_run = prepared_run(config, run_dir / "regression", path, dataset, truth, args.members, device)
        step = student_run.models.meta.step
        for nfe in args.nfe:
            sampler = dataclasses.replace(recommended, num_steps=nfe)
            if args.student_tune is not None:
                sampler = dataclasses.replace(sampler, sigma_min=tuned_sigma_min(args.student_tune, nfe))
            rows.append({"model": "student", "step": step, "solver": sampler.solver, "nfe": nfe,
                         "sigma_min": sampler.sigma_min, **scored(student_run, sampler)})

    print(f"{len(truth.times)} {args.split} times, {args.members} members; teacher's sampler from {source}; "
          f"student {student.path} ({recommended.schedule} levels from {recommended.sigma_max:g} to "
          f"{recommended.sigma_min:g})")
    header = ["model", "step", "solver", "nfe", "sigma_min", *COLUMNS]
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]:>14.4g}" if isinstance(row[h], float) else f"{row[h]!s:>14}" for h in header))
    costs = cost_rows(run_dir, args.cores)
    for kind, steps, hours, core_hours in costs:
        print(f"{kind:>9}: {steps} steps, {hours:.3g} h wall, {core_hours:.3g} core-hours (x {args.cores:g})")
    if len(costs) == 2 and costs[0][2] > 0:
        print(f"distillation / diffusion training: {costs[1][2] / costs[0][2]:.3g} of the wall-clock time")
    if args.time_steps and len(costs) == 2:
        per_step = side_by_side(config, args.time_steps, args.overrides)
        (_, diffusion_steps, _, _), (_, distill_steps, _, _) = costs
        ratio = distill_steps * per_step["distill"] / (diffusion_steps * per_step["diffusion"])
        print(f"side by side, {args.time_steps} steps each: diffusion {per_step['diffusion']:.3g} s/step, distill "
              f"{per_step['distill']:.3g} s/step ({per_step['distill'] / per_step['diffusion']:.3g}x); "
              f"{distill_steps} distill steps / {diffusion_steps} diffusion steps cost {ratio:.3g}x")
    if args.out is not None:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
