"""The EDM sampler (Karras et al. 2022, Algorithm 2): Heun's method with optional stochastic churn.

Member k of an ensemble draws all of its noise from its own generator, seeded by (seed, k) alone
(`corrdiff.seeding.member_generator`), so a member is the same whatever batch it is generated in.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from corrdiff.seeding import member_generator

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""D(x, sigma) -> denoised x; x (batch, C, H, W), sigma (batch,). Conditioning is closed over."""


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of the EDM sampler; S_churn = 0 gives the deterministic (probability-flow ODE) sampler.

    Also the `sampler:` section of the run config: unknown keys are errors there.
    """

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic when the run config is validated

    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 800.0
    rho: float = 7.0
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = float("inf")
    S_noise: float = 1.0

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {self.num_steps}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")


def karras_sigmas(config: SamplerConfig, device=None) -> torch.Tensor:
    """Noise levels σ_0 > … > σ_{N−1} of Karras et al. (eq. 5), with σ_N = 0 appended: (num_steps + 1,), float64."""
    steps = torch.arange(config.num_steps, dtype=torch.float64, device=device)
    inv_rho = 1.0 / config.rho
    span = max(config.num_steps - 1, 1)
    sigmas = (config.sigma_max**inv_rho + steps / span * (config.sigma_min**inv_rho - config.sigma_max**inv_rho)) ** config.rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64, device=device)])


def _randn(shape: Sequence[int], generators: list[torch.Generator], device) -> torch.Tensor:
    """One standard-normal draw of `shape` per generator, stacked: (len(generators), *shape)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device) for g in generators])


def edm_sample(
    denoise: Denoise,
    shape: Sequence[int],
    members: Sequence[int],
    seed: int,
    config: SamplerConfig = SamplerConfig(),
    device=None,
    generators: list[torch.Generator] | None = None,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one sample per member with the EDM Heun sampler: (len(members), *shape), float32.

    `shape` is (C, H, W) of one sample; members are integer ids (member k of a seed is reproducible).
    `latents` (len(members), *shape), standard normal, replaces the members' first draw if given.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generators is None:
        generators = [member_generator(seed, k, device) for k in members]
    sigma_list = karras_sigmas(config).tolist()  # on the host: the step logic branches on them, no device syncs
    batch = len(generators)
    if latents is None:
        latents = _randn(shape, generators, device)
    x_next = latents.to(device=device, dtype=torch.float64) * sigma_list[0]
    gamma_max = min(config.S_churn / config.num_steps, math.sqrt(2) - 1)
    for i in range(config.num_steps):
        t_cur, t_next = sigma_list[i], sigma_list[i + 1]
        x_cur = x_next
        gamma = gamma_max if config.S_min <= t_cur <= config.S_max else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            churn = _randn(shape, generators, device).to(torch.float64)
            x_hat = x_cur + math.sqrt(t_hat**2 - t_cur**2) * config.S_noise * churn
        else:
            x_hat = x_cur
        denoised = denoise(x_hat.to(torch.float32), torch.full((batch,), t_hat, device=device)).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < config.num_steps - 1:  # Heun correction, skipped on the last step to σ = 0
            denoised = denoise(x_next.to(torch.float32), torch.full((batch,), t_next, device=device)).to(torch.float64)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.to(torch.float32)


def sample_ensemble(
    denoiser,
    mean: torch.Tensor,
    condition: torch.Tensor,
    members: Sequence[int],
    seed: int,
    config: SamplerConfig = SamplerConfig(),
    batch_size: int | None = None,
    patcher=None,
) -> torch.Tensor:
    """CorrDiff ensemble μ + r for one time: (len(members), C, H, W).

    `mean` (1, C, H, W) is the regression prediction μ, `condition` (1, C_cond, H, W) the diffusion
    condition; members are generated `batch_size` at a time (all at once by default). With a
    `patcher` (corrdiff.diffusion.patching.PatchedDenoiser), the denoiser runs on stitched patches.
    For the fast path, pass a denoiser wrapped once with `corrdiff.perf.prepare_denoiser`.
    """
    device = mean.device
    members = list(members)
    batch_size = batch_size or len(members)
    outputs = []
    for start in range(0, len(members), batch_size):
        chunk = members[start : start + batch_size]
        cond = condition.expand(len(chunk), -1, -1, -1)

        def denoise(x, sigma, cond=cond):
            if patcher is not None:
                return patcher(denoiser, x, sigma, cond)
            return denoiser(x, sigma, cond)

        residual = edm_sample(denoise, mean.shape[1:], chunk, seed, config, device)
        outputs.append(mean + residual)
    return torch.cat(outputs)
