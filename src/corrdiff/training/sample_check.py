"""The sample check of diffusion training and distillation: a few validation times sampled with the EMA network,
and scored.

Every `sample_every` steps (and at the last step) the trainer draws a small ensemble for `sample_times` evenly
spaced validation times, as generation would with the network the checkpoint keeps (the EMA weights, μ from the
frozen regression, stitched patches for a patch-trained network), with `sample_members` members and the task's
sampler (`check_sampler`):
- the diffusion step: a cheap one, DPM-Solver++(2M) on log-linear noise levels, `diffusion.sample_steps` steps
  (one network evaluation each; the demo's generation sampler, which matched 35-evaluation Heun on the demo, where
  6-step Heun drew ~25× the small-scale power of the ensembles generation then made);
- a consistency student (`corrdiff train distill`): the sampler its checkpoint recommends (`consistency`,
  `distill.recommended_steps` evaluations), whose fair CRPS also picks its `best` checkpoint, since the
  distillation loss cannot (`DistillTask.selects_by_samples`).
Each time's members draw their noise from a seed fixed for the whole run (common random numbers), so that two
checks differ by the network alone.

Scores, in normalised units (each channel in units of its training standard deviation, after the spec's
transforms), over the checked times (`corrdiff.evaluation.ensemble_scores`):

    val_crps_fair      fair CRPS (the unbiased estimator over pairs of distinct members)
    val_spread_skill   spread/skill, ≈ 1 for a calibrated ensemble
    val_power_ratio    the members' power over the truth's in the smallest octave, 2–4 grid spacings
    val_lsd            log-spectral distance over all wavenumbers (mean |log10| of the power ratio)

each as the mean over channels, and per channel as `val_crps_fair/<channel>` and so on. `sample_s` is the
seconds the check took. The run's `best-crps` checkpoint is the one with the lowest `val_crps_fair`.
"""

import dataclasses
import time

import numpy as np
import torch

from corrdiff.config import GenerateSection, SampledSection
from corrdiff.data import PairedDataset
from corrdiff.diffusion import downscale_ensemble, PatchedDenoiser, SamplerConfig
from corrdiff.evaluation.ensemble_scores import Scores
from corrdiff.fast_path import FastDenoiser, FastPath
from corrdiff.seeding import derive_seed
from corrdiff.training.tasks import DiffusionTask

SAMPLE_STREAM = 2**31 - 2  # seed component reserved for the sample check's noise
SCORES = ("crps_fair", "spread_skill", "power_ratio", "lsd")
HEADLINE = "val_crps_fair"  # what best-crps minimises


def check_fields(channels) -> list[str]:
    """The metrics.csv columns of the sample check for these target channels: means, per channel, seconds."""
    return [f"val_{k}" for k in SCORES] + [f"val_{k}/{c}" for k in SCORES for c in channels] + ["sample_s"]


class SampleCheck:
    """Samples and scores the fixed validation times of a diffusion run (module docstring)."""

    def __init__(self, task: DiffusionTask, section: SampledSection, val_set: PairedDataset,
                 device: torch.device, fast: FastPath):
        self.task, self.device = task, device
        self.channels = list(val_set.target_channels)
        self.members = section.sample_members
        self.sampler: SamplerConfig = task.check_sampler()
        # The training fast path without compilation, graphs or fused norms: those belong to the trained network.
        self.fast = dataclasses.replace(fast, compile=False, cuda_graphs=False, fused_norm=False)
        count = min(section.sample_times, len(val_set))
        self.indices = np.unique(np.linspace(0, len(val_set) - 1, count).round().astype(int)).tolist()
        self.seeds = [derive_seed(section.seed, SAMPLE_STREAM, i) for i in self.indices]
        self.val_set = val_set
        self.patcher = None
        if section.patch_shape:  # sampled as generation samples a patch-trained network by default
            overlap = tuple(min(o, p // 2) for o, p in zip(GenerateSection().patch_overlap, section.patch_shape))
            self.patcher = PatchedDenoiser(tuple(val_set.lat.shape), tuple(section.patch_shape), overlap,
                                           condition=task.condition)

    @torch.no_grad()
    def run(self, denoiser: torch.nn.Module) -> dict[str, float]:
        """The scores (module docstring) of `denoiser`, the EMA network, on the checked times."""
        start = time.perf_counter()
        wrapped = FastDenoiser(denoiser, self.fast) if self.fast != FastPath() else denoiser
        scores = None
        for index, seed in zip(self.indices, self.seeds):
            sample = self.val_set[index]
            inputs = sample.input[None].to(self.device)
            _, ensemble = downscale_ensemble(self.task.regression, wrapped, self.task.condition, inputs,
                                             self.members, seed, self.sampler, patcher=self.patcher,
                                             residual_unit=self.task.residual_unit)
            truth = sample.target.numpy()
            if scores is None:
                scores = Scores(truth.shape[0], self.members, truth.shape[1:])
            scores.add(ensemble.cpu().numpy(), truth, index)
        result = scores.result()
        row = {f"val_{k}": float(np.mean(result[k])) for k in SCORES}
        row |= {f"val_{k}/{c}": float(result[k][i]) for k in SCORES for i, c in enumerate(self.channels)}
        row["sample_s"] = time.perf_counter() - start
        return row
