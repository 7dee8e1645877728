"""`corrdiff demo`: the whole method on the embedded quasi-geostrophic dataset, on a CPU, in minutes.

Builds the demo data (cached), trains both models briefly, generates an ensemble for the held-out
times, scores it beside interpolation and the regression mean, and writes a report. Rerunning picks up
where a previous run stopped: training resumes from its checkpoints and generation from its file.
"""

import time
from pathlib import Path

import numpy as np
import yaml

from corrdiff.config import apply_overrides, load_config
from corrdiff.data import build_demo_dataset, PairedFields
from corrdiff.diffusion.solvers import network_evaluations
from corrdiff.evaluation import evaluate, text_table, write_report, write_scores
from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest
from corrdiff.training import train

# Sized for ~10 minutes on 2 CPU cores, venv and data included; the networks are small versions of the
# paper's (same blocks, fewer channels and levels).
DEMO_CONFIG = {
    "model": {"preset": "tiny", "model_channels": 32, "channel_mult": [1, 2, 2], "channel_mult_emb": 4,
              "num_blocks": 1, "attn_resolutions": [16], "dropout": 0.0},
    "regression": {"steps": 250, "batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "validate_every": 100,
                   "checkpoint_every": 100, "ema_halflife_samples": 500, "num_workers": 0},
    "diffusion": {"steps": 300, "batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "validate_every": 100,
                  "checkpoint_every": 100, "ema_halflife_samples": 500, "num_workers": 0},
    # docs/sampling.md, "Measured on the demo": DPM-Solver++(2M) with 7 log-linear steps matches 18 Heun steps
    # (35 evaluations) in CRPS and spread/skill on the validation and the whole test split, with less excess
    # small-scale power, in a fifth of the network evaluations.
    "sampler": {"solver": "dpmpp_2m", "schedule": "loglinear", "num_steps": 7},
    "generate": {"members": 8, "split": "test", "format": "netcdf"},
}
DEMO_TIMES = 24  # held-out times downscaled and scored, evenly spaced over the test split


def write_config(out_dir: Path, spec: Path, overrides: list[str]) -> Path:
    """The demo's run config, written to `out_dir/config.yaml`."""
    raw = {"data": str(spec.resolve()), "run_dir": "run", **DEMO_CONFIG}
    raw = apply_overrides(yaml.safe_load(yaml.safe_dump(raw)), overrides)
    path = out_dir / "config.yaml"
    path.write_text("# corrdiff demo run config (written by `corrdiff demo`)\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def held_out_times(spec: Path, count: int) -> list[str]:
    """`count` evenly spaced times of the spec's test split (ISO strings)."""
    times = PairedFields(spec).times("test")
    picked = times[np.unique(np.linspace(0, len(times) - 1, min(count, len(times))).round().astype(int))]
    return [str(np.datetime64(t, "s")) for t in picked]


def sampler_used(attrs) -> str:
    """The sampler an ensemble file records (generate writes `sampler_<setting>` attributes), in a few words:
    solver, schedule, steps and network evaluations per member, churn, calibration and PhysicsNeMo's arithmetic
    when used."""
    solver, steps = attrs.get("sampler_solver"), attrs.get("sampler_num_steps")
    if solver is None or steps is None:
        return "sampler not recorded"
    words = f"{solver} ({attrs.get('sampler_schedule', '?')}), {int(steps)} steps, NFE " \
            f"{network_evaluations(str(solver), int(steps))}"
    if float(attrs.get("sampler_S_churn", 0) or 0):
        words += f", S_churn {float(attrs['sampler_S_churn']):g}"
    if str(attrs.get("sampler_residual_scale", "()")) not in ("()", "[]", ""):
        words += f", residual_scale {attrs['sampler_residual_scale']}"
    if attrs.get("sampler_arithmetic", "edm") != "edm":
        words += f", arithmetic {attrs['sampler_arithmetic']}"
    return words


def evaluate_demo(spec_path, ensemble_path, out_dir, echo=print) -> dict[str, Path]:
    """Score the demo ensemble against truth beside interpolation and the regression mean; print the table
    (its title names the sampler that made the ensemble) with `echo`, write `out_dir/scores.nc` and the report
    in `out_dir/report/`; returns their paths."""
    out_dir = Path(out_dir)
    result = evaluate(ensemble_path, spec_path, spectra_times=32)
    try:
        sampler = sampler_used(result.evaluation.models["corrdiff"].attrs)
        echo(text_table(result.scores, title=f"demo scores over {result.scores.sizes['time']} test times, "
                                             f"corrdiff sampler {sampler}"))
        for note in result.evaluation.notes:
            echo(f"note: {note}")
        scores = write_scores(result.scores, out_dir / "scores.nc")
        report = write_report(result.evaluation, result.scores, result.distributions, out_dir / "report",
                              title="corrdiff demo: evaluation")
    finally:
        result.evaluation.close()  # a rerun of the demo in this process appends to the same ensemble file
    return {"scores": scores, "report": report}


def run_demo(out_dir: Path, overrides: list[str] | None = None, progress: bool = True, echo=print,
             times: int = DEMO_TIMES, data_options: dict | None = None) -> dict:
    """Run the demo end to end; returns the paths of what it wrote."""
    start = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = lambda what: echo(f"[{time.perf_counter() - start:6.1f} s] {what}")

    stamp("building the demo dataset (cached after the first run)")
    spec = build_demo_dataset(out_dir / "data", progress=progress, **(data_options or {}))
    config_path = write_config(out_dir, spec, overrides or [])
    config = load_config(config_path)
    for kind in ("regression", "diffusion"):
        stamp(f"training the {kind} model")
        train(kind, config, resume=True, progress=progress)
    stamp("generating the ensemble for the held-out times")
    ensemble = out_dir / "ensemble.nc"
    run_dir = Path(config.run_dir)
    request = GenerationRequest(run_dir / "regression", run_dir / "diffusion", times=held_out_times(spec, times))
    generate(config, request, EnsembleOutput(ensemble, progress=progress))
    stamp("scoring against interpolation and the regression mean; writing the report")
    results = evaluate_demo(spec, ensemble, out_dir, echo=echo)
    stamp("done")
    paths = {"config": config_path, "data": spec.parent, "run": run_dir, "ensemble": ensemble, **results}
    echo("\nOutputs:")
    for name, path in paths.items():
        echo(f"  {name:<10} {path}")
    return paths
