"""Data efficiency: train both steps on fractions of the training split, score each on the same test times.

Fraction f keeps ⌈f·N⌉ of the N training times (sorted), by `--order`:

    contiguous  the first ⌈f·N⌉: a block of the record; the fractions are nested (every time of f = 0.25 is one
                of f = 0.5)
    spread      ⌈f·N⌉ times evenly spread over the whole record (`corrdiff.data.spec.spread_indices`: the first
                time, then every N/⌈f·N⌉-th), so a fraction samples every season and regime of the record; nested
                when the counts divide each other (N/4 and N/2 of N, say)

The fraction reaches training as a config override, not as copied data: the driver writes a small dataset spec
per fraction (`fraction-F/spec.yaml`: the run's spec with absolute paths, its `splits.train` narrowed to those
times, its normalisation statistics computed from them alone) and trains with `--set data=<that spec>` and
`run_dir=fraction-F/run`. Every fraction gets the same optimisation steps and batch size (the run config's), so
the models differ only by the data they saw, not by how long they trained; smaller fractions therefore see each
sample more often.

Each fraction is scored at its best validation checkpoints, not its last: the diffusion step's `best-crps` (the
lowest fair CRPS of its sample check; `best`, by validation loss, when the check is off) and the regression
step's `best`, which the diffusion step was trained against (`corrdiff.checkpoint.resolve`). done.json and the
table name the checkpoint and step scored.

Layout of `--out`:

    experiment.json              what made the folder (kind, run config, order, fingerprint); only such a folder is
                                 resumed
    fraction-0.25/spec.yaml      the fraction's dataset spec, stats.json its statistics
    fraction-0.25/run/           regression/ and diffusion/ run folders (checkpoints, logs)
    fraction-0.25/ensemble.nc    the ensemble of the test times; scores.nc its scores; done.json once scored (with
                                 the checkpoints scored)
    data_size.csv, data_size.nc  the table (fraction, model, variable); data_size.png the figure

A fraction whose done.json holds this fingerprint (run config, dataset spec, test times, order, fraction) is not
redone; an unfinished one resumes its training and its ensemble. `--out` is never the run config, the dataset spec
or one of its files, nor a folder inside or holding one (`corrdiff.output_paths`), and one experiment at a time
writes it (`corrdiff.locks`).
"""

import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from corrdiff import checkpoint as ckpt, locks
from corrdiff.checkpoint import read_pointer
from corrdiff.config import dump_config, load_config, RunConfig
from corrdiff.data import load_spec, PairedFields
from corrdiff.data.spec import spread_indices
from corrdiff.errors import ConfigError, TrainingError
from corrdiff.evaluation import evaluate, write_scores
from corrdiff.experiments.data_size_table import data_size_figure, data_size_table, write_table
from corrdiff.file_integrity import sha256_bytes
from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest
from corrdiff.output_paths import check_not_an_input, make_folder, spec_inputs
from corrdiff.training import train

KIND = "corrdiff data-size experiment"
MARKER = "experiment.json"
DONE = "done.json"
SOURCE_KEYS = ("inputs", "targets", "static")
ORDERS = ("contiguous", "spread")
SCORED = {"regression": "best", "diffusion": "best-crps"}  # the checkpoint of each step a fraction is scored at


def parse_fractions(values) -> list[float]:
    """The fractions as floats, checked: each in (0, 1], strictly increasing; a ConfigError otherwise.

    `values`: numbers or strings, a string may hold several separated by commas."""
    texts = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
    if not texts:
        raise ConfigError("--fractions: give at least one fraction of the training split, e.g. 0.25 0.5 1")
    fractions = []
    for text in texts:
        try:
            fraction = float(text)
        except ValueError:
            raise ConfigError(f"--fractions: {text!r} is not a number; give fractions such as 0.25 0.5 1 "
                              "(after the run config)") from None
        if not 0 < fraction <= 1 or math.isnan(fraction):
            raise ConfigError(f"--fractions: {text} is not in (0, 1]: a fraction of the training split must be "
                              "above 0 and at most 1")
        fractions.append(fraction)
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise ConfigError(f"--fractions: {' '.join(texts)} must be strictly increasing, with no fraction twice "
                          "(e.g. 0.125 0.25 0.5 1)")
    return fractions


def samples_of(fractions: list[float], num_train: int, where: str) -> list[int]:
    """The number of training times of each fraction, ⌈f·N⌉; a ConfigError if two fractions give the same."""
    counts = [max(1, math.ceil(f * num_train - 1e-9)) for f in fractions]
    for (fa, na), (fb, nb) in zip(zip(fractions, counts), zip(fractions[1:], counts[1:])):
        if na == nb:
            raise ConfigError(f"--fractions: {fa:g} and {fb:g} both keep {na} of the {num_train} training times of "
                              f"{where}; drop one, or use fractions further apart")
    return counts


def fraction_times(all_train: np.ndarray, count: int, order: str) -> np.ndarray:
    """The `count` training times of a fraction of `all_train` (sorted), by `order` (module docstring)."""
    if order == "contiguous":
        return all_train[:count]
    if order == "spread":
        return all_train[spread_indices(len(all_train), count)]
    raise ConfigError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")


def fraction_dir(out: Path, fraction: float) -> Path:
    return out / f"fraction-{fraction:g}"


def iso(time_value) -> str:
    return str(np.datetime64(time_value, "s"))


def fraction_spec(spec_path: Path, all_train: np.ndarray, count: int, order: str, folder: Path) -> Path:
    """Write `folder/spec.yaml`: the spec at `spec_path` reading the same files (absolute paths), its train split
    narrowed to `fraction_times(all_train, count, order)` and its statistics in `folder/stats.json`."""
    train_times = fraction_times(all_train, count, order)
    spec = load_spec(spec_path)
    raw = yaml.safe_load(Path(spec_path).read_text())
    for key in SOURCE_KEYS:
        if raw.get(key):
            paths = raw[key]["paths"]
            raw[key]["paths"] = [str(spec.resolve(p)) for p in paths] if isinstance(paths, list) \
                else str(spec.resolve(paths))
    if raw.get("grid"):
        raw["grid"] = str(spec.resolve(raw["grid"]))
    raw["stats"] = "stats.json"  # computed from this fraction's times only, on first use
    if order == "spread" and count < len(all_train):  # the split's own rule picks the same times (`Split.count`)
        split = {"start": iso(all_train[0]), "end": iso(all_train[-1]), "count": count}
    else:
        split = {"start": iso(train_times[0]), "end": iso(train_times[-1])}
    raw.setdefault("splits", {})["train"] = split
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(f"# {len(train_times)} training times ({order}) from {iso(train_times[0])} to "
                    f"{iso(train_times[-1])} of {spec_path} (written by `corrdiff experiment data-size`)\n"
                    + yaml.safe_dump(raw, sort_keys=False))
    return path


def scored_times(spec_path: Path, split: str, count: int | None) -> list[str]:
    """`count` evenly spaced times of the split (all of them for None), ISO strings."""
    times = PairedFields(load_spec(spec_path)).times(split)
    if len(times) == 0:
        raise ConfigError(f"{spec_path}: split {split!r} (generate.split) has no times to score the fractions on")
    if count is not None:
        times = times[np.unique(np.linspace(0, len(times) - 1, min(count, len(times))).round().astype(int))]
    return [iso(t) for t in times]


def fingerprint(base: RunConfig, spec_path: Path, tests: list[str], order: str) -> str:
    """SHA-256 of what decides every fraction's result: the run config (its run_dir aside), the dataset spec's
    text, the test times, the order of the fractions and the checkpoints scored."""
    settings = yaml.safe_load(dump_config(base))
    for key in ("run_dir", "source"):
        settings.pop(key, None)
    text = json.dumps({"config": settings, "spec": Path(spec_path).read_text(), "test_times": tests,
                       "order": order, "scored": SCORED}, sort_keys=True, default=str)
    return sha256_bytes(text)


def claim_out(out: Path, config_path: Path, digest: str, order: str) -> None:
    """Make `out` this experiment's folder: new, empty, or an earlier data-size run of the same settings."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the experiment")
    if out.is_dir() and any(out.iterdir()):
        try:
            held = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"--out {out} is not empty and holds no data-size experiment ({MARKER}); nothing in "
                              "it is overwritten: choose a new or empty folder") from None
        if held.get("kind") != KIND:
            raise ConfigError(f"--out {out}: {marker} is not a data-size experiment's; choose another folder")
        if held.get("fingerprint") != digest:
            raise ConfigError(f"--out {out} holds a data-size experiment of other settings (run config "
                              f"{held.get('config')}, dataset spec, test times or --order (there: "
                              f"{held.get('order', 'contiguous')}) changed, or made by an earlier corrdiff); choose "
                              "another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"kind": KIND, "config": str(config_path), "order": order, "fingerprint": digest},
                                 indent=2) + "\n")


def is_done(folder: Path, digest: str) -> bool:
    """Whether the fraction's models, ensemble and scores are complete and were made with this fingerprint."""
    try:
        done = json.loads((folder / DONE).read_text())
    except (OSError, ValueError):
        return False
    run = folder / "run"
    return done.get("fingerprint") == digest and (folder / "scores.nc").is_file() and \
        all(read_pointer(run / kind / "checkpoints", "latest") for kind in ("regression", "diffusion"))


def scored_checkpoint(run_dir: Path, kind: str) -> dict:
    """The checkpoint of a step that a fraction is scored at (`SCORED`, read as `resolve` reads it): its folder,
    the pointer that named it, its step and validation scores."""
    root = Path(run_dir) / kind / "checkpoints"
    pointer = next(p for p in ckpt.pointer_chain(SCORED[kind]) if read_pointer(root, p) is not None)
    meta = ckpt.load_model(root / pointer, kind=kind).meta
    return {"path": str(ckpt.resolve(root / pointer)), "pointer": pointer, "step": meta.step,
            "val_loss": meta.val_loss, "val_crps_fair": meta.val_crps_fair}


def run_fraction(config_path: Path, overrides: list[str], spec_path: Path, folder: Path, all_train: np.ndarray,
                 count: int, order: str, tests: list[str], progress: bool, stamp) -> tuple[Path, dict]:
    """Train both steps on the fraction's times, generate the test times with its best checkpoints and score them;
    returns scores.nc and the scored checkpoints (`scored_checkpoint`) of each step."""
    spec = fraction_spec(spec_path, all_train, count, order, folder)
    config = load_config(config_path, [*overrides, f"data={spec}", f"run_dir={folder / 'run'}"])
    for kind in ("regression", "diffusion"):
        stamp(f"training the {kind} step")
        run_dir, status = train(kind, config, resume=True, progress=progress)
        if status == "interrupted":
            raise TrainingError(f"stopped by SIGTERM while training {run_dir}; run the same command again to continue")
    run_dir = Path(config.run_dir)
    scored = {kind: scored_checkpoint(run_dir, kind) for kind in SCORED}
    stamp(f"generating {len(tests)} test times with the regression's {scored['regression']['pointer']} (step "
          f"{scored['regression']['step']}) and the diffusion's {scored['diffusion']['pointer']} (step "
          f"{scored['diffusion']['step']}) checkpoints")
    request = GenerationRequest(scored["regression"]["path"], scored["diffusion"]["path"], times=tests)
    ensemble = generate(config, request, EnsembleOutput(folder / "ensemble.nc", progress=progress))
    stamp("scoring")
    result = evaluate(ensemble, spec, distributions=False)
    try:
        return write_scores(result.scores, folder / "scores.nc"), scored
    finally:
        result.evaluation.close()


def run_data_size(config_path, fractions, out, overrides: list[str] | None = None, test_count: int | None = None,
                  progress: bool = True, echo=print, order: str = "contiguous") -> dict[str, Path]:
    """Run the data-size experiment (module docstring); returns the paths of the table, NetCDF and figure."""
    start = time.perf_counter()
    given_out = Path(out)  # as the user named it, in the messages
    config_path, out, overrides = Path(config_path).resolve(), given_out.resolve(), list(overrides or [])
    fractions = parse_fractions(fractions)
    if order not in ORDERS:
        raise ConfigError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    base = load_config(config_path, overrides)
    spec_path = Path(base.data)
    spec = load_spec(spec_path)
    all_train = PairedFields(spec).times("train")
    if len(all_train) == 0:
        raise ConfigError(f"{spec_path}: the train split has no times to take fractions of")
    counts = samples_of(fractions, len(all_train), str(spec_path))
    tests = scored_times(spec_path, base.generate.split, test_count)
    digest = fingerprint(base, spec_path, tests, order)
    check_not_an_input(given_out, {"the run config": [config_path]} | spec_inputs(spec))
    make_folder(out)
    with locks.for_output(given_out):  # one experiment at a time in `out`
        claim_out(out, config_path, digest, order)
        steps = f"{base.regression.steps} regression and {base.diffusion.steps} diffusion steps"
        echo(f"data-size experiment: {len(fractions)} fractions ({order}) of {len(all_train)} training times, {steps} "
             f"each, scored on {len(tests)} {base.generate.split} times; results in {out}")
        for index, (fraction, count) in enumerate(zip(fractions, counts), 1):
            folder = fraction_dir(out, fraction)
            label = f"fraction {index}/{len(fractions)} ({fraction:g}: {count} training times)"
            fraction_digest = sha256_bytes(f"{digest} {fraction!r} {count}")
            if is_done(folder, fraction_digest):
                echo(f"{label}: done before, skipped")
                continue
            stamp = lambda what, label=label: echo(f"[{time.perf_counter() - start:7.1f} s] {label}: {what}")
            train_times = fraction_times(all_train, count, order)
            began = time.perf_counter()
            _, scored = run_fraction(config_path, overrides, spec_path, folder, all_train, count, order, tests,
                                     progress, stamp)
            (folder / DONE).write_text(json.dumps({
                "fingerprint": fraction_digest, "fraction": fraction, "train_samples": count, "order": order,
                "train_start": iso(train_times[0]), "train_end": iso(train_times[-1]),
                "regression_steps": base.regression.steps, "diffusion_steps": base.diffusion.steps,
                "scored": scored, "seconds": round(time.perf_counter() - began, 1)}, indent=2) + "\n")
        folders = [fraction_dir(out, f) for f in fractions]
        table = data_size_table(folders)
        paths = write_table(table, out / "data_size")
        paths["figure"] = data_size_figure(table, out / "data_size.png")
    echo(f"[{time.perf_counter() - start:7.1f} s] done")
    return paths
