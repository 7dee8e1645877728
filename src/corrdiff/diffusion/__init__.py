"""The CorrDiff method in pure torch: EDM preconditioning, losses, the sampler and patching."""

from corrdiff.diffusion.losses import EDMLoss, regression_loss, weighted_mse
from corrdiff.diffusion.patching import PatchedDenoiser, crop, global_context, random_patches
from corrdiff.diffusion.precond import EDMPrecond, edm_scalings, effective_target
from corrdiff.diffusion.sampler import SamplerConfig, edm_sample, karras_sigmas, member_generator, sample_ensemble

__all__ = [
    "EDMLoss",
    "EDMPrecond",
    "PatchedDenoiser",
    "SamplerConfig",
    "crop",
    "edm_sample",
    "edm_scalings",
    "effective_target",
    "global_context",
    "karras_sigmas",
    "member_generator",
    "random_patches",
    "regression_loss",
    "sample_ensemble",
    "weighted_mse",
]
