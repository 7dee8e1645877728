"""`corrdiff tune`: the cost/skill trade-off of the samplers, measured on held-out data, and a recommendation.

For every setting of a grid (solver × network evaluations × churn × schedule × σ_min) the ensemble of `members`
members is generated for `times` evenly spaced times of a split (validation by default) with the seeds generation
would use, so every setting sees the same starting noise (common random numbers: differences between settings
are the solvers', not the draws'). Each is scored per channel in physical units against the truth:

    CRPS, MAE of the ensemble mean, spread/skill (`corrdiff.evaluation.metrics`), and the power ratio in the
    smallest octave, wavelengths 2–4 grid spacings (`corrdiff.evaluation.spectra`; the members' mean power
    over the truth's), the log-spectral distance over all wavenumbers up to Nyquist (mean |log10| of the
    same two spectra's ratio), and the wall-clock seconds per member (regression included, one pass per time;
    the median over times, after one untimed warm-up pass).

Channels are combined by `crps_norm`, the mean over channels of CRPS / (the truth's standard deviation over
the scored pixels), and likewise `mae_norm`; `lsd_mean` is the mean LSD over channels. The recommendation
(`choose`) is the cheapest setting (fewest network evaluations, then lowest CRPS) among those whose `crps_norm`
is within `tolerance` (1%) of the best and whose `lsd_mean` is within `lsd_tolerance` (0.05) of the lowest
of those: as skilful as the best, and with as true a texture as the skilful ones. Calibration then fits
one factor s per channel on the residual of the recommended setting's members (member = μ + s·r, so a member
still depends on its own seed only): among the s on a grid whose CRPS is no worse than s = 1, the one whose
spread/skill is nearest 1. It is fitted and scored on the same times, so its gain is an in-sample estimate.

Each measured setting is logged as soon as it is scored (`corrdiff.tuning_files.RowLog`): a killed tune, rerun,
measures only what is missing, provided the models, data, seeds and members are the same (`run_fingerprint`).
"""

import dataclasses
import functools
import hashlib
import itertools
import logging
import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from corrdiff import __version__, sampler_file
from corrdiff.config import RunConfig
from corrdiff.data import DownscalingDataset, load_spec
from corrdiff.diffusion import PatchedDenoiser
from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.diffusion.solvers import CHURN_SOLVERS, steps_for
from corrdiff.distributed import pick_device
from corrdiff.errors import ConfigError, OutputError
from corrdiff.evaluation.ensemble_scores import Scores as EnsembleScores
from corrdiff.inference import checks, downscale, Fingerprint, load_models
from corrdiff.inference.generate import check_fits
from corrdiff.inference.member_batching import MemberBatching
from corrdiff.perf import prepare_denoiser
from corrdiff.seeding import time_seed
from corrdiff.tuning_files import markdown_table, OUTPUTS, ROWS, RowLog, write_outputs  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

SOLVERS = ("heun", "euler", "dpmpp_2m", "dpmpp_2m_sde")
NFE = (5, 7, 9, 11, 15, 23, 35)
CHURN = (0.0,)
SCALES = np.round(np.arange(0.5, 3.0001, 0.05), 2)  # calibration factors tried
LSD_TOLERANCE = 0.05  # texture rule of `choose`, in log10 units (docs/sampling.md says why)
PER_CHANNEL = ("crps", "mae", "rmse", "spread", "spread_skill", "power_ratio", "lsd")


def sampler_grid(base: SamplerConfig, solvers=SOLVERS, nfe=NFE, churn=CHURN, schedules=None,
                 sigma_mins=None) -> list[SamplerConfig]:
    """The settings to measure: `base` with each solver, schedule, smallest noise level σ_min (default: the
    config's), step count (the most steps within each NFE) and churn (heun and euler only; the others are measured
    once, without). Duplicates are dropped."""
    settings = []
    for solver, schedule, sigma_min in itertools.product(solvers, schedules or (base.schedule,),
                                                         sigma_mins or (base.sigma_min,)):
        for evaluations in sorted(nfe):
            for s_churn in churn if solver in CHURN_SOLVERS else (0.0,):
                try:
                    setting = dataclasses.replace(base, solver=solver, schedule=schedule, S_churn=float(s_churn),
                                                  sigma_min=float(sigma_min),
                                                  num_steps=steps_for(solver, evaluations), residual_scale=())
                except ValueError as err:
                    raise ConfigError(f"tune: {err}") from None
                if setting not in settings:
                    settings.append(setting)
    return settings


@dataclass
class Truth:
    """The scored times: inputs (normalised, (1, C_in, H, W) each), truth (time, C, H, W) in physical units."""

    times: np.ndarray
    conditions: list[torch.Tensor]
    truth: np.ndarray
    seeds: list[int]
    scale: np.ndarray
    """(C,) the truth's standard deviation per channel: divides CRPS and MAE to combine channels."""


def scored_times(dataset, count: int, seed: int, device) -> Truth:
    """`count` evenly spaced times of `dataset` (0: all), with their generation seeds and physical truth."""
    total = len(dataset)
    if total == 0:
        raise ConfigError("tune: the split has no times")
    indices = np.unique(np.linspace(0, total - 1, min(count, total) if count else total).round().astype(int))
    conditions, truth, times, seeds = [], [], [], []
    for index in indices:
        sample = dataset[int(index)]
        if sample.target is None:
            raise ConfigError("tune: the dataset has no targets to score against")
        conditions.append(sample.input[None].to(device))
        truth.append(dataset.stats.denormalize_target(sample.target[None])[0].numpy())
        stamp = np.datetime64(sample.time, "ns")
        times.append(stamp)
        seeds.append(time_seed(seed, stamp))  # as generation seeds a time: members equal generate's
    truth = np.stack(truth).astype(np.float32)
    return Truth(np.array(times), conditions, truth, seeds, np.nanstd(truth, axis=(0, 2, 3)))


# Per-channel sums over times of an ensemble's scores, giving the PER_CHANNEL ones (corrdiff.evaluation.ensemble_scores).
Scores = functools.partial(EnsembleScores, keys=PER_CHANNEL)


@dataclass
class Run:
    """What generating with one setting needs besides the setting."""

    models: object  # corrdiff.inference.generate.Models
    truth: Truth
    members: int
    batching: MemberBatching  # members at once, as generation chooses them
    patcher: PatchedDenoiser | None
    fingerprint: Fingerprint  # what determines the scores, besides the setting: when logged rows may be reused


def measure(run: Run, sampler: SamplerConfig, bar=None, keep: bool = False):
    """Scores of `sampler` over the run's times, seconds per member (the median over times: robust to other
    work on a shared machine), and (with `keep`) the normalised (mean, ensemble) of each time for calibration."""
    stats = run.models.meta.stats
    truth = run.truth.truth
    scores = Scores(truth.shape[1], run.members, truth.shape[2:])
    seconds, kept = [], []
    for t, (condition, seed) in enumerate(zip(run.truth.conditions, run.truth.seeds)):
        start = clock.perf_counter()
        mean, ensemble = run.batching.run(
            lambda size: downscale(run.models, condition, run.members, seed, sampler, size, run.patcher))
        mean, ensemble = mean.cpu(), ensemble.cpu()  # waits for the device: the time is the work's
        seconds.append(clock.perf_counter() - start)
        scores.add(stats.denormalize_target(ensemble).numpy(), truth[t], t)
        if keep:
            kept.append((mean, ensemble))
        if bar is not None:
            bar.update()
    return scores.result(), float(np.median(seconds)) / run.members, kept


def choose(table: xr.Dataset, tolerance: float, lsd_tolerance: float | None = LSD_TOLERANCE) -> int:
    """The index of the cheapest setting (fewest evaluations, then lowest CRPS) among those within `tolerance`
    of the best `crps_norm` whose `lsd_mean` is within `lsd_tolerance` of the lowest among them.

    The texture rule is skipped when `lsd_tolerance` is None or infinite, or the table has no `lsd_mean`.
    """
    crps = table["crps_norm"].values
    if not np.isfinite(crps).any():
        raise ConfigError("tune: no setting gave a finite CRPS")
    ok = crps <= np.nanmin(crps) * (1 + tolerance)
    if lsd_tolerance is not None and np.isfinite(lsd_tolerance) and "lsd_mean" in table:
        lsd = table["lsd_mean"].values
        if np.isfinite(lsd[ok]).any():
            ok &= lsd <= np.nanmin(lsd[ok]) + lsd_tolerance
    return int(min(np.flatnonzero(ok), key=lambda i: (int(table["network_evaluations"][i]), crps[i])))


def calibrate(kept: list, truth: np.ndarray, stats, scales=SCALES) -> xr.Dataset:
    """Per-channel residual factors (see the module docstring) and the scores before and after, as a Dataset.

    `kept` holds the normalised (mean (1, C, H, W), ensemble (member, C, H, W)) of each time of `truth`
    (time, C, H, W), physical units; `stats` (a Normalization) denormalises the scaled members.
    """
    channels, members = truth.shape[1], kept[0][1].shape[0]
    curves = {k: np.zeros((len(scales), channels)) for k in PER_CHANNEL}
    for i, scale in enumerate(scales):
        scores = Scores(channels, members, truth.shape[2:])
        for t, (mean, ensemble) in enumerate(kept):
            scaled = mean + float(scale) * (ensemble - mean)
            scores.add(stats.denormalize_target(scaled).numpy(), truth[t], t)
        for k, v in scores.result().items():
            curves[k][i] = v
    one = int(np.argmin(np.abs(scales - 1.0)))
    chosen = []
    for c in range(channels):
        ok = np.flatnonzero(curves["crps"][:, c] <= curves["crps"][one, c])
        chosen.append(int(ok[np.argmin(np.abs(curves["spread_skill"][ok, c] - 1.0))]))
    pick = lambda k: np.array([curves[k][i, c] for c, i in enumerate(chosen)])  # noqa: E731
    data = {"residual_scale": (("channel",), scales[chosen].astype(np.float64))}
    for k in PER_CHANNEL:
        data[f"calibration_{k}"] = (("scale", "channel"), curves[k])
        data[f"{k}_before"] = (("channel",), curves[k][one])
        data[f"{k}_after"] = (("channel",), pick(k))
    return xr.Dataset(data, coords={"scale": scales})


def build_table(settings: list[SamplerConfig], results: list, seconds: list, truth: Truth, channels) -> xr.Dataset:
    """The measured grid as a Dataset: per-channel scores (setting, channel), combined scores (setting)."""
    per_channel = {k: np.stack([r[k] for r in results]) for k in PER_CHANNEL}
    data = {k: (("setting", "channel"), v) for k, v in per_channel.items()}
    data["seconds_per_member"] = (("setting",), np.array(seconds))
    with np.errstate(divide="ignore", invalid="ignore"):
        data["crps_norm"] = (("setting",), (per_channel["crps"] / truth.scale).mean(axis=1))
        data["mae_norm"] = (("setting",), (per_channel["mae"] / truth.scale).mean(axis=1))
    data["spread_skill_mean"] = (("setting",), per_channel["spread_skill"].mean(axis=1))
    data["power_ratio_mean"] = (("setting",), per_channel["power_ratio"].mean(axis=1))
    data["lsd_mean"] = (("setting",), per_channel["lsd"].mean(axis=1))
    coords = {"setting": np.arange(len(settings)), "channel": list(channels),
              "solver": ("setting", [s.solver for s in settings]),
              "schedule": ("setting", [s.schedule for s in settings]),
              "num_steps": ("setting", [s.num_steps for s in settings]),
              "network_evaluations": ("setting", [s.network_evaluations for s in settings]),
              "S_churn": ("setting", [s.S_churn for s in settings]),
              "sigma_min": ("setting", [s.sigma_min for s in settings]),
              "truth_std": ("channel", truth.scale.astype(np.float64)), "time": truth.times}
    return xr.Dataset(data, coords)


@dataclass
class TuneResult:
    table: xr.Dataset
    recommendation: sampler_file.Recommendation
    best: int
    chosen: int
    paths: list[Path]


def output_paths(out_dir, recommendation_path) -> list[Path]:
    return [Path(out_dir) / name for name in OUTPUTS] + [Path(recommendation_path)]


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """An OutputError before any work when an output exists and `overwrite` is not given."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{', '.join(existing)} exist(s); pass --overwrite to replace them")


def tune(config: RunConfig, regression_path, diffusion_path, out_dir=None, recommendation_path=None,
         split: str = "validation", members: int = 8, times: int = 8, solvers=SOLVERS, nfe=NFE, churn=CHURN,
         schedules=None, sigma_mins=None, tolerance: float = 0.01, lsd_tolerance: float | None = LSD_TOLERANCE,
         calibration: bool = True, dataset=None, progress: bool = True, overwrite: bool = False) -> TuneResult:
    """Measure the grid, recommend a sampler, calibrate it, and write tune.csv, tune.nc, tune.png in `out_dir`
    (default <run_dir>/tune) and the recommendation at `recommendation_path` (default <run_dir>/sampler.yaml).

    Settings already measured by an interrupted tune of the same models and data (its row log in `out_dir`)
    are not measured again."""
    if members < 2:
        raise ConfigError(f"tune: --members must be at least 2 (spread needs two), got {members}")
    if tolerance < 0 or (lsd_tolerance is not None and not lsd_tolerance >= 0):
        raise ConfigError(f"tune: --tolerance and --lsd-tolerance must be at least 0, got {tolerance} and "
                          f"{lsd_tolerance}")
    out_dir = Path(out_dir) if out_dir is not None else Path(config.run_dir) / "tune"
    recommendation_path = Path(recommendation_path or sampler_file.path_in(config.run_dir))
    paths = output_paths(out_dir, recommendation_path)
    check_outputs(paths, overwrite)
    settings = sampler_grid(config.sampler, solvers, nfe, churn, schedules, sigma_mins)
    if not settings:
        raise ConfigError("tune: the grid is empty (give at least one solver and one NFE)")
    run = _prepare(config, regression_path, diffusion_path, split, members, times, dataset)
    channels = list(run.models.meta.target_channels)
    total = len(run.truth.times) * (len(settings) + (1 if calibration else 0))
    rows = RowLog(out_dir / ROWS, run.fingerprint)
    resumed = [s for s in settings if rows.get(s) is not None]
    if resumed:
        log.info(f"{rows.path}: {len(resumed)} of {len(settings)} settings measured by an interrupted tune; "
                 "measuring the rest")
    results, seconds = [], []
    with tqdm(total=total, desc="tune", unit="time", disable=not progress) as bar:
        for setting in settings:
            found = rows.get(setting)
            if found is None:
                bar.set_postfix_str(f"{setting.solver} NFE {setting.network_evaluations} churn {setting.S_churn:g}")
                found = measure(run, setting, bar)[:2]
                rows.add(setting, *found)
            else:
                bar.update(len(run.truth.times))
            results.append(found[0])
            seconds.append(found[1])
        table = build_table(settings, results, seconds, run.truth, channels)
        chosen = choose(table, tolerance, lsd_tolerance)
        sampler = settings[chosen]
        if calibration:
            bar.set_postfix_str("calibration")
            _, _, kept = measure(run, sampler, bar, keep=True)
            fitted = calibrate(kept, run.truth.truth, run.models.meta.stats)
            table = table.merge(fitted)
            if not np.allclose(fitted["residual_scale"].values, 1.0):
                sampler = dataclasses.replace(sampler, residual_scale=tuple(fitted["residual_scale"].values.tolist()))
    best = int(np.nanargmin(table["crps_norm"].values))
    table["recommended"] = ("setting", np.arange(len(settings)) == chosen)
    lsd_rule = float(lsd_tolerance) if lsd_tolerance is not None else float("inf")
    table.attrs.update(title="corrdiff tune", split=split, times=len(run.truth.times), members=members,
                       seed=config.generate.seed, tolerance=tolerance, lsd_tolerance=lsd_rule, best=best,
                       recommended=chosen, resumed_settings=len(resumed), fingerprint=run.fingerprint.digest,
                       comment="crps_norm, mae_norm: mean over channels of the score / truth_std; lsd_mean: "
                               "mean over channels of the log-spectral distance")
    tuning = {"split": split, "times": len(run.truth.times), "members": members, "seed": config.generate.seed,
              "tolerance": tolerance, "lsd_tolerance": lsd_rule, "network_evaluations": sampler.network_evaluations,
              "crps_norm": float(table["crps_norm"][chosen]), "best_crps_norm": float(table["crps_norm"][best]),
              "lsd_mean": float(table["lsd_mean"][chosen]), "best_lsd_mean": float(table["lsd_mean"][best]),
              "setting": label(settings[chosen]),
              "best": label(settings[best]), "seconds_per_member": float(table["seconds_per_member"][chosen]),
              "table": str(out_dir / "tune.nc")}
    recommendation = sampler_file.Recommendation(
        sampler, run.models.provenance["diffusion_checkpoint_sha256"], tuple(channels), tuning)
    written = write_outputs(table, recommendation, out_dir, recommendation_path)
    rows.remove()  # the outputs hold every row now
    return TuneResult(table, recommendation, best, chosen, written)


def _prepare(config: RunConfig, regression_path, diffusion_path, split, members, times, dataset) -> Run:
    """Models on the configured device, with generation's fast path, patches and member batching; the scored
    times."""
    gen = config.generate
    device = pick_device(config.device)
    models = load_models(regression_path, diffusion_path, device)
    if dataset is None:
        dataset = DownscalingDataset(load_spec(config.data), split=split, stats=models.meta.stats, with_target=True)
    check_fits(models, dataset)
    patch_shape = checks.generation_patches("patch_shape" in gen.model_fields_set, gen.patch_shape, models.meta)
    checks.check_patches(patch_shape, gen.patch_overlap, dataset.lat.shape, models.meta.unet.channel_mult)
    models.fast = gen.fast_path(device)
    models.denoiser = prepare_denoiser(models.denoiser, models.fast)
    patcher = None
    if patch_shape:
        patcher = PatchedDenoiser(tuple(dataset.lat.shape), tuple(patch_shape), tuple(gen.patch_overlap),
                                  condition=models.condition)
    batching = MemberBatching(gen.member_batch, members, device)
    truth = scored_times(dataset, times, gen.seed, device)
    fingerprint = run_fingerprint(models, truth, split, members, gen.seed, patch_shape, gen.patch_overlap)
    run = Run(models, truth, members, batching, patcher, fingerprint)
    # One untimed pass first: lazy initialisation, compilation, CUDA graphs and the GPU's member batch are
    # not the solvers' cost.
    warm = dataclasses.replace(config.sampler, solver="euler", num_steps=2, S_churn=0.0, residual_scale=())
    batching.run(lambda size: downscale(models, run.truth.conditions[0], members, 0, warm, size, patcher))
    return run


def run_fingerprint(models, truth: Truth, split: str, members: int, seed: int, patch_shape,
                    patch_overlap) -> Fingerprint:
    """What determines a setting's scores besides the setting: checkpoints, the scored inputs and truth (their
    bytes), times, seed, members, patches, precision and corrdiff's version. Not the device or member batch,
    which only reorder float32 arithmetic (seconds per member are reused as measured)."""
    def digest(arrays) -> str:
        return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()

    return Fingerprint({
        "corrdiff_version": __version__,
        "regression_checkpoint_sha256": models.provenance["regression_checkpoint_sha256"],
        "diffusion_checkpoint_sha256": models.provenance["diffusion_checkpoint_sha256"],
        "split": split, "seed": int(seed), "members": int(members),
        "times": [str(np.datetime64(t, "s")) for t in truth.times],
        "inputs_sha256": digest([c.float().cpu().numpy() for c in truth.conditions]),
        "truth_sha256": digest([truth.truth]),
        "patch_shape": list(patch_shape) if patch_shape else None,
        "patch_overlap": list(patch_overlap) if patch_shape else None,
        "bf16": bool(models.fast.bf16)})


def label(sampler: SamplerConfig) -> str:
    """One line naming a setting: solver, schedule, steps, evaluations, churn and a σ_min other than the default."""
    churn = f", S_churn {sampler.S_churn:g}" if sampler.S_churn else ""
    churn += f", sigma_min {sampler.sigma_min:g}" if sampler.sigma_min != SamplerConfig().sigma_min else ""
    return f"{sampler.solver} ({sampler.schedule}), {sampler.num_steps} steps, NFE {sampler.network_evaluations}{churn}"
