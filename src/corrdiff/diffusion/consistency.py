"""Consistency distillation (Song et al. 2023, "Consistency Models", ICML, Algorithm 2) of an EDM denoiser.

A consistency function f(x, σ) maps a point of the probability-flow ODE dx/dσ = (x − D(x, σ))/σ at any noise
level σ to the point of the same trajectory at σ = ε (the smallest level, `sigma_min`), where f(x, ε) = x. The
student f_θ (`corrdiff.diffusion.ConsistencyPrecond`, which enforces f(x, ε) = x by its parameterisation) is
trained on the Karras discretisation ε = σ_1 < … < σ_N = σ_max (eq. 5 of Karras et al. 2022, ρ = 7) so that
neighbouring points of one trajectory map to the same place:

    n ~ U{1, …, N − 1},  z ~ N(0, I),  x_{n+1} = x + σ_{n+1} z          (x: a clean residual)
    x̂_n = one step of the teacher's ODE from σ_{n+1} to σ_n (Heun or Euler, `teacher_step`)
    loss = d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n))                    (λ ≡ 1, as in the paper's CD)

with θ⁻ the target network, an exponential moving average of θ updated after every step (θ⁻ ← μθ⁻ + (1 − μ)θ,
kept by `corrdiff.training.distill`), and d the squared L2 distance (mean over the elements) or the
pseudo-Huber distance of Song & Dhariwal 2023 ("Improved techniques for training consistency models"),
sqrt(‖a − b‖² + c²) − c per sample, c = 0.00054·sqrt(d) for d elements. Both networks see the same condition
(the coarse input and μ, as `DiffusionCondition` builds it for the teacher). The sampler is
`corrdiff.diffusion.solvers.consistency`.
"""

import math
from dataclasses import dataclass

import torch

from corrdiff.diffusion.sampler import karras_sigmas, SamplerConfig

TEACHER_STEPS = ("heun", "euler")
"""The ODE steps the teacher may take between neighbouring levels (`teacher_step`)."""
DISTANCES = ("l2", "pseudo_huber")


def teacher_step(denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                 condition: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                 solver: str = "heun") -> torch.Tensor:
    """x at σ_next from x at σ (batch, C, H, W) by one step of the probability-flow ODE with the denoiser D.

    `sigma`, `sigma_next`: (batch,), each sample its own step; all σ > 0. Euler: x + (σ' − σ)·d(x, σ) with
    d = (x − D(x, σ))/σ; Heun (Karras et al. 2022, Algorithm 1, one step): the mean of d at both ends.
    """
    if solver not in TEACHER_STEPS:
        raise ValueError(f"the teacher's step must be one of {list(TEACHER_STEPS)}, got {solver!r}")
    here, there = sigma.reshape(-1, 1, 1, 1), sigma_next.reshape(-1, 1, 1, 1)
    slope = (x - denoiser(x, sigma, condition, positions)) / here
    x_next = x + (there - here) * slope
    if solver == "heun":
        slope_next = (x_next - denoiser(x_next, sigma_next, condition, positions)) / there
        x_next = x + (there - here) * (0.5 * slope + 0.5 * slope_next)
    return x_next


def consistency_levels(num_scales: int, sigma_min: float, sigma_max: float, rho: float, device=None) -> torch.Tensor:
    """The discretisation σ_1 = ε < … < σ_N = σ_max of Karras et al. (the sampler's `karras_sigmas`), ascending:
    (num_scales,), float64."""
    config = SamplerConfig(schedule="karras", num_steps=num_scales, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    return karras_sigmas(config, device)[:-1].flip(0)


@dataclass(frozen=True)
class ConsistencyDistillation:
    """The consistency-distillation loss of a batch (module docstring); its settings live in the run config's
    `distill:` section (`corrdiff.config.DistillSection`)."""

    num_scales: int
    """N, the levels of the discretisation (at least 2)."""
    sigma_min: float
    """ε: the student's boundary, f(x, ε) = x."""
    sigma_max: float
    rho: float
    teacher_solver: str = "heun"
    distance: str = "l2"
    huber_c: float | None = None
    """c of the pseudo-Huber distance; None: 0.00054·sqrt(elements of one sample)."""

    def __post_init__(self):
        if self.num_scales < 2:
            raise ValueError(f"num_scales must be at least 2, got {self.num_scales}")
        if not 0 < self.sigma_min < self.sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max (finite), got {self.sigma_min} and {self.sigma_max}")
        if self.teacher_solver not in TEACHER_STEPS:
            raise ValueError(f"teacher_solver must be one of {list(TEACHER_STEPS)}, got {self.teacher_solver!r}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {list(DISTANCES)}, got {self.distance!r}")

    def levels(self, device=None) -> torch.Tensor:
        """σ_1 … σ_N ascending, (num_scales,) float32 on `device`."""
        return consistency_levels(self.num_scales, self.sigma_min, self.sigma_max, self.rho, device).to(torch.float32)

    def distance_between(self, predicted: torch.Tensor, wanted: torch.Tensor,
                         channel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """d(predicted, wanted) over (batch, C, H, W), channel c's squared differences weighted by w_c: scalar."""
        squared = (predicted.to(torch.float32) - wanted.to(torch.float32)) ** 2
        if channel_weights is not None:
            squared = squared * channel_weights.to(squared).reshape(1, -1, 1, 1)
        if self.distance == "l2":
            return squared.mean()
        c = self.huber_c if self.huber_c is not None else 0.00054 * math.sqrt(squared[0].numel())
        return ((squared.flatten(1).sum(1) + c**2).sqrt() - c).mean()

    def __call__(self, student, target, teacher, clean: torch.Tensor, condition: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None, channel_weights: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Scalar loss for clean samples (batch, C, h, w), e.g. residuals; `student` is trained (f_θ), `target`
        (f_θ⁻) and `teacher` (D) are run without gradients. Draws: the level index, then the noise."""
        levels = self.levels(clean.device)
        index = torch.randint(0, self.num_scales - 1, (clean.shape[0],), generator=generator, device=clean.device)
        sigma_low, sigma_high = levels[index], levels[index + 1]
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        noisy = clean + sigma_high.reshape(-1, 1, 1, 1) * noise
        with torch.no_grad():
            stepped = teacher_step(teacher, noisy, sigma_high, sigma_low, condition, positions, self.teacher_solver)
            wanted = target(stepped, sigma_low, condition, positions)
        predicted = student(noisy, sigma_high, condition, positions)
        return self.distance_between(predicted, wanted, channel_weights)
