"""The CorrDiff method in pure torch: EDM preconditioning, losses, the sampler, the condition and patching; the
consistency student's parameterisation (its distillation: `corrdiff.diffusion.consistency`)."""

from corrdiff.diffusion.conditioning import DiffusionCondition, diffusion_network
from corrdiff.diffusion.losses import EDMLoss, regression_loss, weighted_mse
from corrdiff.diffusion.multidiffusion import PatchedDenoiser
from corrdiff.diffusion.patching import crop, crops_at, global_context, patch_offsets, random_patches
from corrdiff.diffusion.precond import consistency_scalings, ConsistencyPrecond, EDMPrecond, edm_scalings, \
    effective_target
from corrdiff.diffusion.sampler import downscale_ensemble, SamplerConfig, edm_sample, karras_sigmas, sample_ensemble

__all__ = [
    "ConsistencyPrecond",
    "DiffusionCondition",
    "EDMLoss",
    "EDMPrecond",
    "PatchedDenoiser",
    "SamplerConfig",
    "crop",
    "crops_at",
    "consistency_scalings",
    "diffusion_network",
    "downscale_ensemble",
    "edm_sample",
    "edm_scalings",
    "effective_target",
    "global_context",
    "karras_sigmas",
    "patch_offsets",
    "random_patches",
    "regression_loss",
    "sample_ensemble",
    "weighted_mse",
]
