"""Integrators of the EDM probability-flow ODE dx/dσ = (x − D(x, σ))/σ (and its SDE), on a given σ grid.

Every solver takes the starting point x (batch, C, H, W) float64 at σ_0, the noise levels
σ_0 > … > σ_{N−1} > σ_N = 0 as host floats, the denoiser D, and a `noise()` that draws standard-normal
noise of x's shape from the members' own generators (`corrdiff.diffusion.sampler` builds it); it gives
back x at σ = 0, float64. Network evaluations (NFE) for N steps: Heun 2N − 1 (its last step, to σ = 0,
is an Euler step), the others N.

- `heun`: Karras et al. 2022, Algorithm 2 (second order; S_churn > 0 adds their stochastic churn). With
  arithmetic "physicsnemo", PhysicsNeMo 2.2.2's `stochastic_sampler` instead: γ = S_churn/N is not capped at
  √2 − 1, and churn noise is drawn at every step, also where γ = 0 (there multiplied by 0), so that each
  member's stream of draws lines up with PhysicsNeMo's.
- `euler`: the same without the correction (first order; churn as in Heun). In EDM's parameterisation
  (x = y + σn) an Euler step in σ is also DDIM and DPM-Solver++(1).
- `dpmpp_2m`: DPM-Solver++(2M), Lu et al. 2022 (Algorithm 2): exponential integrator in λ = −log σ for the
  data prediction D, second order by reusing the previous step's D (one evaluation per step).
- `dpmpp_2m_sde`: its SDE variant (Lu et al. 2022, SDE-DPM-Solver++(2M)): the same multistep correction on the
  reverse SDE, which injects fresh noise at every step.

The first step of the multistep solvers (no previous D) and their last step (to σ = 0, where λ is infinite)
are first order; the last step of every solver returns D(x, σ_{N−1}).

- `consistency`: multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1) of a
  consistency student f (`corrdiff train distill`; the `denoise` it is given is f, not D): each evaluation jumps
  from its level to σ_min, where f is the identity, and the next level is reached by fresh noise. It lands at
  σ_min, not 0, so its σ list is the N levels and σ_min of the schedule with N + 1 levels (`Solver.consistency`).
  It samples a student only, and a student samples with it only (`corrdiff.inference.checks.check_solver`).

`SOLVERS` names them: a new solver is its integrator here and its row there (and a test in
tests/diffusion/test_solvers.py); the config, the sampler and `corrdiff tune` take it from that row.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[], torch.Tensor]


def _denoised(denoise: Denoise, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x, σ) in float64 for x float64; the network sees float32 and one σ per sample."""
    sigma_batch = torch.full((x.shape[0],), sigma, device=x.device)
    return denoise(x.to(torch.float32), sigma_batch).to(torch.float64)


def _churned(x: torch.Tensor, sigma: float, gamma: float, S_noise: float, noise: Noise,
             always_draw: bool = False) -> tuple[torch.Tensor, float]:
    """Karras et al.'s churn, (x̂, σ̂): x raised from σ to σ̂ = σ(1 + γ) with fresh noise; γ = 0: x unchanged (and
    no draw, unless `always_draw`: PhysicsNeMo draws and multiplies by 0)."""
    sigma_hat = sigma * (1 + gamma)
    if gamma <= 0:
        if always_draw:
            noise()
        return x, sigma_hat
    return x + math.sqrt(sigma_hat**2 - sigma**2) * S_noise * noise().to(torch.float64), sigma_hat


def _gamma(sigma: float, steps: int, S_churn: float, S_min: float, S_max: float) -> float:
    """The churn of one step: min(S_churn/N, √2 − 1) inside [S_min, S_max], else 0."""
    return min(S_churn / steps, math.sqrt(2) - 1) if S_min <= sigma <= S_max else 0.0


def heun(denoise: Denoise, x: torch.Tensor, sigmas: list[float], noise: Noise, S_churn: float = 0.0,
         S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
         arithmetic: str = "edm") -> torch.Tensor:
    """x at σ = 0 by Heun's method with churn (Karras et al. 2022, Algorithm 2): 2N − 1 evaluations.

    `arithmetic` "physicsnemo": PhysicsNeMo's `stochastic_sampler` (γ uncapped, a churn draw at every step)."""
    steps = len(sigmas) - 1
    physicsnemo = arithmetic == "physicsnemo"
    gamma_max = S_churn / steps if physicsnemo else min(S_churn / steps, math.sqrt(2) - 1)
    x_next = x
    for i in range(steps):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        gamma = gamma_max if S_min <= t_cur <= S_max else 0.0
        x_hat, t_hat = _churned(x_next, t_cur, gamma, S_noise, noise, always_draw=physicsnemo)
        d_cur = (x_hat - _denoised(denoise, x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < steps - 1:  # Heun correction, skipped on the last step to σ = 0
            d_prime = (x_next - _denoised(denoise, x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def euler(denoise: Denoise, x: torch.Tensor, sigmas: list[float], noise: Noise, S_churn: float = 0.0,
          S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0) -> torch.Tensor:
    """x at σ = 0 by Euler's method in σ, with the same churn as `heun`: N evaluations."""
    steps = len(sigmas) - 1
    for i in range(steps):
        gamma = _gamma(sigmas[i], steps, S_churn, S_min, S_max)
        x_hat, t_hat = _churned(x, sigmas[i], gamma, S_noise, noise)
        x = x_hat + (sigmas[i + 1] - t_hat) * (x_hat - _denoised(denoise, x_hat, t_hat)) / t_hat
    return x


def dpmpp_2m(denoise: Denoise, x: torch.Tensor, sigmas: list[float], noise: Noise | None = None) -> torch.Tensor:
    """x at σ = 0 by DPM-Solver++(2M) (Lu et al. 2022): N evaluations; `noise` is not used (deterministic).

    With h = λ_{i+1} − λ_i, λ = −log σ, and r = h_{i−1}/h_i, one step is
        x_{i+1} = (σ_{i+1}/σ_i) x_i + (1 − e^{−h}) ((1 + 1/(2r)) D_i − D_{i−1}/(2r)).
    """
    previous, h_previous = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoised(denoise, x, sigma)
        if sigma_next == 0:
            return denoised  # λ = ∞: the exponential integrator lands on D
        h = math.log(sigma / sigma_next)
        estimate = denoised
        if previous is not None:
            half_over_r = h / (2 * h_previous)
            estimate = (1 + half_over_r) * denoised - half_over_r * previous
        x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        previous, h_previous = denoised, h
    return x


def dpmpp_2m_sde(denoise: Denoise, x: torch.Tensor, sigmas: list[float], noise: Noise) -> torch.Tensor:
    """x at σ = 0 by SDE-DPM-Solver++(2M) (Lu et al. 2022): N evaluations, fresh noise at every step but the last.

    With h and r as in `dpmpp_2m`, one step is
        x_{i+1} = e^{−2h} x_i + (1 − e^{−2h}) ((1 + 1/(2r)) D_i − D_{i−1}/(2r))
                  + σ_{i+1} sqrt(1 − e^{−2h}) n.
    """
    previous, h_previous = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoised(denoise, x, sigma)
        if sigma_next == 0:
            return denoised
        h = math.log(sigma / sigma_next)
        estimate = denoised
        if previous is not None:
            half_over_r = h / (2 * h_previous)
            estimate = (1 + half_over_r) * denoised - half_over_r * previous
        decay = -math.expm1(-2 * h)  # 1 − e^{−2h}
        x = math.exp(-2 * h) * x + decay * estimate + sigma_next * math.sqrt(decay) * noise().to(torch.float64)
        previous, h_previous = denoised, h
    return x


def consistency(denoise: Denoise, x: torch.Tensor, sigmas: list[float], noise: Noise) -> torch.Tensor:
    """x at σ_min by multistep consistency sampling (Song et al. 2023, Algorithm 1): N evaluations of the student f.

    `sigmas` are τ_0 > … > τ_{N−1} and, last, σ_min = ε, where f is the identity; x = τ_0·z. Then
        x̂ = f(x, τ_0);  for i = 1 … N − 1:  x = x̂ + sqrt(τ_i² − ε²)·n_i,  x̂ = f(x, τ_i)
    with n_i fresh noise of the member's own generator; x̂ is returned.
    """
    *levels, sigma_min = sigmas
    sample = _denoised(denoise, x, levels[0])
    for level in levels[1:]:
        x = sample + math.sqrt(level**2 - sigma_min**2) * noise().to(torch.float64)
        sample = _denoised(denoise, x, level)
    return sample


CHURN = ("S_churn", "S_min", "S_max", "S_noise")  # Karras et al.'s churn, as `SamplerConfig` names it


@dataclass(frozen=True)
class Solver:
    """One solver as the sampler, `SamplerConfig` and `corrdiff tune` know it: its integrator and properties."""

    integrate: Callable[..., torch.Tensor]
    """x at σ = 0 from (denoise, x, sigmas, noise, **settings), as the integrators above."""
    settings: tuple[str, ...] = ()
    """The `SamplerConfig` fields it takes as keyword arguments (those of CHURN: it takes churn)."""
    evaluations_per_step: int = 1
    """Network evaluations of each step but the last."""
    last_step_evaluations: int = 1
    """Network evaluations of the last step, to σ = 0."""
    sde: bool = False
    """It draws fresh noise at every step (the reverse SDE; multistep consistency sampling after its first step):
    stochastic without churn."""
    physicsnemo: str | None = None
    """The PhysicsNeMo 2.2.2 sampler it reproduces with arithmetic "physicsnemo" (None: it has none);
    its `deterministic_sampler` without churn only."""
    consistency: bool = False
    """It samples a consistency student f (and is the only kind of solver a student samples with): its σ list is
    the N levels and σ_min of the schedule with N + 1 levels, and each evaluation lands at σ_min, not 0."""

    @property
    def takes_churn(self) -> bool:
        return "S_churn" in self.settings


SOLVERS = {
    "heun": Solver(heun, CHURN + ("arithmetic",), evaluations_per_step=2, physicsnemo="stochastic_sampler"),
    "euler": Solver(euler, CHURN, physicsnemo="deterministic_sampler"),
    "dpmpp_2m": Solver(dpmpp_2m),
    "dpmpp_2m_sde": Solver(dpmpp_2m_sde, sde=True),
    "consistency": Solver(consistency, sde=True, consistency=True),
}
"""Every solver by the name `SamplerConfig.solver` takes, in the order `corrdiff tune` measures them: the one list
of solvers (the sampler's dispatch, the config's check, tune's grid and its `--solver` read it)."""


def solvers_for(student: bool) -> list[str]:
    """The names of the solvers that can sample a consistency student (`student`), or a denoiser."""
    return [name for name, solver in SOLVERS.items() if solver.consistency == student]


def churn_solvers() -> list[str]:
    """The names of the solvers that take S_churn, S_min, S_max, S_noise."""
    return [name for name, solver in SOLVERS.items() if solver.takes_churn]


def network_evaluations(solver: str, steps: int) -> int:
    """Denoiser calls of one sample with `steps` steps: 2N − 1 for Heun (its last step is an Euler step), N for the
    others."""
    rule = SOLVERS[solver]
    return rule.evaluations_per_step * (steps - 1) + rule.last_step_evaluations


def min_network_evaluations(solver: str) -> int:
    """The fewest denoiser calls a sample of `solver` can take: those of one step."""
    return network_evaluations(solver, 1)


def steps_for(solver: str, nfe: int) -> int:
    """The most steps whose evaluations do not exceed `nfe`; a ValueError below `min_network_evaluations`."""
    if nfe < min_network_evaluations(solver):
        raise ValueError(f"{solver} needs at least {min_network_evaluations(solver)} network evaluation(s) "
                         f"(one step), not {nfe}")
    rule = SOLVERS[solver]
    return 1 + (nfe - rule.last_step_evaluations) // rule.evaluations_per_step
