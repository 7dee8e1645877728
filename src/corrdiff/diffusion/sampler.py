"""Sampling the residual with the EDM family of solvers: settings, noise schedules, seeding, ensembles.

The solvers themselves, and the list of them (`SOLVERS`), are in
`corrdiff.diffusion.solvers`; this module chooses the noise levels, draws the noise and builds the ensemble.
Member k of an ensemble draws all of its noise (the starting point, churn, SDE noise) from its own generator,
seeded by (seed, k) alone (`corrdiff.seeding.member_generator`), so a member is the same whatever batch it is
generated in, for every solver.

`SamplerConfig.arithmetic` chooses between EDM's arithmetic (the default) and PhysicsNeMo 2.2.2's inference, for
comparing networks imported from it with PhysicsNeMo and Earth2Studio (docs/interop.md): its eval-mode GroupNorm
(both networks), its uncapped churn and its noise draws.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from corrdiff.diffusion.conditioning import DiffusionCondition
from corrdiff.diffusion.solvers import churn_solvers, network_evaluations, SOLVERS
from corrdiff.errors import ConfigError
from corrdiff.models.layers import set_unbiased_norm
from corrdiff.fast_path import FastDenoiser
from corrdiff.seeding import member_generator

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""D(x, sigma) -> denoised x; x (batch, C, H, W), sigma (batch,). Conditioning is closed over."""

SCHEDULES = ("karras", "loglinear")
ARITHMETICS = ("edm", "physicsnemo")


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of the sampler; the default is EDM's deterministic Heun sampler with 18 steps (35 evaluations).

    Also the `sampler:` section of the run config: unknown keys are errors there. `corrdiff tune` measures
    the choices on the validation split and recommends one (docs/sampling.md).
    """

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic when the run config is validated

    solver: str = "heun"
    """A name in `corrdiff.diffusion.solvers.SOLVERS` (docs/sampling.md tables them); heun is Karras et al. 2022's."""
    schedule: str = "karras"
    """Noise levels from sigma_max down to sigma_min: karras (uniform in σ^(1/ρ)) or loglinear (in log σ)."""
    num_steps: int = 18
    """Steps; network evaluations per sample: 2·num_steps − 1 for heun, num_steps for the others
    (`corrdiff.diffusion.solvers.network_evaluations`)."""
    sigma_min: float = 0.002
    sigma_max: float = 800.0
    rho: float = 7.0
    """ρ of the karras schedule (larger: more steps at small σ)."""
    S_churn: float = 0.0
    """Stochastic churn (the solvers that take it: `corrdiff.diffusion.solvers.churn_solvers`): 0 is deterministic
    given the seed."""
    S_min: float = 0.0
    S_max: float = float("inf")
    S_noise: float = 1.0
    residual_scale: tuple[float, ...] = ()
    """Per target channel factor s on the sampled residual r (member = μ + s·r), fitted by `corrdiff tune` to
    calibrate the spread; () leaves every channel as sampled."""
    arithmetic: str = "edm"
    """edm (Karras et al.'s Algorithm 2; corrdiff's own) or physicsnemo: PhysicsNeMo 2.2.2's inference, to reproduce
    its (and Earth2Studio's) numbers with networks imported from it. physicsnemo changes three things: GroupNorm in
    both networks divides by the unbiased group variance (PhysicsNeMo's eval mode), heun's churn γ = S_churn/N is
    not capped at √2 − 1 (its `stochastic_sampler`), and member k draws from a generator seeded with seed + k, the
    same at every time, with a churn draw at every step (its `StackedRandomGenerator`). heun on the karras
    schedule is its `stochastic_sampler`; euler without churn its `deterministic_sampler(solver="euler")`."""

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {self.num_steps}")
        # Written `not x >= 0`, not `x < 0`: a NaN (YAML's .nan, `--churn nan`) fails every comparison.
        if not 0 < self.sigma_min < self.sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max (finite), got {self.sigma_min} and {self.sigma_max}")
        if not self.rho > 0:
            raise ValueError(f"rho must be positive, got {self.rho}")
        if not (self.S_churn >= 0 and self.S_noise >= 0):
            raise ValueError(f"S_churn and S_noise must be at least 0, got {self.S_churn} and {self.S_noise}")
        if not 0 <= self.S_min <= self.S_max:
            raise ValueError(f"need 0 <= S_min <= S_max, got {self.S_min} and {self.S_max}")
        if self.S_churn > 0 and not SOLVERS[self.solver].takes_churn:
            sde = [name for name, solver in SOLVERS.items() if solver.sde]
            hint = f" ({' and '.join(sde)} {'is' if len(sde) == 1 else 'are'} stochastic by itself)" if sde else ""
            raise ValueError(f"S_churn applies to the solvers {churn_solvers()}, not {self.solver!r}; "
                             f"set S_churn: 0{hint}")
        if self.arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic must be one of {list(ARITHMETICS)}, got {self.arithmetic!r}")
        if self.arithmetic == "physicsnemo":
            self._check_physicsnemo()
        if any(not (s > 0 and math.isfinite(s)) for s in self.residual_scale):
            raise ValueError(f"residual_scale must hold positive finite numbers, got {list(self.residual_scale)}")
        object.__setattr__(self, "residual_scale", tuple(float(s) for s in self.residual_scale))

    def _check_physicsnemo(self) -> None:
        """A ValueError unless PhysicsNeMo has this sampler (`Solver.physicsnemo`: heun its `stochastic_sampler`,
        euler without churn its `deterministic_sampler`, whose churn draws corrdiff does not reproduce), on the
        karras schedule."""
        reproduced = {name: solver.physicsnemo for name, solver in SOLVERS.items() if solver.physicsnemo}
        if self.solver not in reproduced or self.schedule != "karras":
            raise ValueError(f"arithmetic 'physicsnemo' reproduces PhysicsNeMo's samplers: solver "
                             f"{' or '.join(reproduced)} on the karras schedule, not solver {self.solver!r} on "
                             f"{self.schedule!r}")
        if reproduced[self.solver] == "deterministic_sampler" and self.S_churn > 0:
            churned = " or ".join(f"solver: {name} (its {sampler})" for name, sampler in reproduced.items()
                                  if sampler != "deterministic_sampler")
            raise ValueError(f"arithmetic 'physicsnemo' with solver {self.solver} reproduces PhysicsNeMo's "
                             f"deterministic_sampler without churn: set S_churn: 0, or {churned} for churn")

    @property
    def network_evaluations(self) -> int:
        """Denoiser calls per sample (NFE): 2·num_steps − 1 for heun, num_steps for the others (`Solver`)."""
        return network_evaluations(self.solver, self.num_steps)


def karras_sigmas(config: SamplerConfig, device=None) -> torch.Tensor:
    """Noise levels σ_0 > … > σ_{N−1} of Karras et al. (eq. 5), with σ_N = 0 appended: (num_steps + 1,), float64."""
    steps = torch.arange(config.num_steps, dtype=torch.float64, device=device)
    inv_rho = 1.0 / config.rho
    span = max(config.num_steps - 1, 1)
    sigmas = (config.sigma_max**inv_rho + steps / span * (config.sigma_min**inv_rho - config.sigma_max**inv_rho)) ** config.rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64, device=device)])


def loglinear_sigmas(config: SamplerConfig, device=None) -> torch.Tensor:
    """Noise levels spaced uniformly in log σ from sigma_max to sigma_min, with σ_N = 0 appended: (num_steps + 1,)."""
    steps = torch.arange(config.num_steps, dtype=torch.float64, device=device)
    span = max(config.num_steps - 1, 1)
    log_max, log_min = math.log(config.sigma_max), math.log(config.sigma_min)
    sigmas = torch.exp(log_max + steps / span * (log_min - log_max))
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64, device=device)])


def sigma_schedule(config: SamplerConfig, device=None) -> torch.Tensor:
    """The noise levels of `config.schedule`, σ_N = 0 included: (num_steps + 1,), float64."""
    return karras_sigmas(config, device) if config.schedule == "karras" else loglinear_sigmas(config, device)


def solver_levels(config: SamplerConfig) -> list[float]:
    """The σ list the solver of `config` is given, where it lands last: `sigma_schedule`'s, ending at 0; for a
    consistency solver (`Solver.consistency`), which lands at σ_min, the levels of the schedule with one step more,
    ending at σ_min: [τ_0, …, τ_{N−1}, σ_min]."""
    if not SOLVERS[config.solver].consistency:
        return sigma_schedule(config).tolist()
    return sigma_schedule(dataclasses.replace(config, num_steps=config.num_steps + 1)).tolist()[:-1]


def _randn(shape: Sequence[int], generators: list[torch.Generator], device) -> torch.Tensor:
    """One standard-normal draw of `shape` per generator, stacked: (len(generators), *shape)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device) for g in generators])


def first_draws(shape: Sequence[int], members: Sequence[int], seed: int, arithmetic: str = "edm",
                device=None) -> torch.Tensor:
    """The members' first standard-normal draw, the sampler's starting noise when no `latents` are given:
    (len(members), *shape), float32 on `device`. Drawing it costs no network evaluation (members as time
    series build their starting noise from it: `corrdiff.inference.coherence`)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return _randn(shape, [member_generator(seed, k, device, arithmetic) for k in members], device)


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
    """Draw one sample per member with the solver and schedule of `config`: (len(members), *shape), float32.

    `shape` is (C, H, W) of one sample; members are integer ids (member k of a seed is reproducible).
    `latents` (len(members), *shape), standard normal, replaces the members' first draw (`first_draws`) if given;
    the later draws (churn, SDE noise) then start their members' streams.
    `config.residual_scale` is not applied here (it belongs to the ensemble: `sample_ensemble`), nor the
    networks' part of `config.arithmetic` (`use_arithmetic`, which `downscale_ensemble` applies).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generators is None:
        generators = [member_generator(seed, k, device, config.arithmetic) for k in members]
    sigma_list = solver_levels(config)  # on the host: the step logic branches on them, no device syncs
    if latents is None:
        latents = _randn(shape, generators, device)
    x = latents.to(device=device, dtype=torch.float64) * sigma_list[0]
    noise = lambda: _randn(shape, generators, device)  # noqa: E731 - every draw from the members' own streams
    solver = SOLVERS[config.solver]
    settings = {name: getattr(config, name) for name in solver.settings}
    return solver.integrate(denoise, x, sigma_list, noise, **settings).to(torch.float32)


def sample_ensemble(
    denoiser,
    mean: torch.Tensor,
    condition: torch.Tensor,
    members: Sequence[int],
    seed: int,
    config: SamplerConfig = SamplerConfig(),
    batch_size: int | None = None,
    patcher=None,
    residual_unit: Sequence[float] = (),
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """CorrDiff ensemble μ + s·u·r for one time: (len(members), C, H, W); s is `config.residual_scale` (1 if ()),
    u the per-channel `residual_unit` of the denoiser's data (`CheckpointMeta.residual_unit`; 1 if ()).
    `latents` (len(members), C, H, W): the members' starting noise, as `edm_sample` takes it (None: their first draw).

    `mean` (1, C, H, W) is the regression prediction μ, `condition` (1, C_cond, H, W) the diffusion
    condition; members are generated `batch_size` at a time (all at once by default). With a
    `patcher` (corrdiff.diffusion.patching.PatchedDenoiser), the denoiser runs on stitched patches.
    For the fast path, pass a denoiser wrapped once with `corrdiff.fast_path.prepare_denoiser`.
    """
    device = mean.device
    members = list(members)
    batch_size = batch_size or len(members)
    scale = residual_scale(config, mean.shape[1], device)
    if residual_unit:
        unit = torch.tensor(residual_unit, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
        scale = unit if scale is None else scale * unit
    outputs = []
    for start in range(0, len(members), batch_size):
        chunk = members[start : start + batch_size]
        cond = condition.expand(len(chunk), -1, -1, -1)

        def denoise(x, sigma, cond=cond):
            if patcher is not None:
                return patcher(denoiser, x, sigma, cond)
            return denoiser(x, sigma, cond)

        chunk_latents = None if latents is None else latents[start : start + batch_size]
        residual = edm_sample(denoise, mean.shape[1:], chunk, seed, config, device, latents=chunk_latents)
        outputs.append(mean + residual if scale is None else mean + scale * residual)
    return torch.cat(outputs)


@torch.no_grad()
def downscale_ensemble(regression, denoiser, condition_builder: DiffusionCondition, inputs: torch.Tensor,
                       members: int, seed: int, config: SamplerConfig, member_batch: int | None = None, patcher=None,
                       residual_unit: Sequence[float] = (), first_member: int = 0,
                       latents: torch.Tensor | None = None):
    """Regression mean (1, C, H, W) and ensemble (members, C, H, W), normalised, for one input (1, C_in, H, W).

    The one per-time path of CorrDiff sampling (generation, tune and the sample check of diffusion training):
    μ = regression(inputs), the denoiser's condition built from it by `condition_builder`, members
    first_member … first_member + members − 1 (each seeded by its index);
    `residual_unit` as `sample_ensemble`'s (the checkpoint's `CheckpointMeta.residual_unit()`); `latents`
    (members, C, H, W): the members' starting noise (None: their first draw; `corrdiff.inference.coherence`).
    """
    use_arithmetic(config.arithmetic, regression, denoiser)
    # The mean is one call per time and every member is built on it: float32, never under bf16 autocast.
    mean = regression(inputs).to(torch.float32)
    field = condition_builder.field(inputs, mean)
    # A patcher builds each patch's condition from the whole field; one pass over the domain takes it whole.
    denoiser_condition = field if patcher is not None else condition_builder.whole_domain(field)
    ensemble = sample_ensemble(denoiser, mean, denoiser_condition, range(first_member, first_member + members), seed,
                               config, member_batch, patcher, residual_unit, latents)
    return mean, ensemble


def use_arithmetic(arithmetic: str, *networks: torch.nn.Module) -> None:
    """Set the GroupNorm layers of `networks` to `arithmetic`'s eval-mode variance (unbiased for "physicsnemo"),
    in place; a network on the fast path that changes forgets its compiled code and CUDA graphs."""
    for net in networks:
        if set_unbiased_norm(net, arithmetic == "physicsnemo") and isinstance(net, FastDenoiser):
            net.reset()


def residual_scale(config: SamplerConfig, channels: int, device=None) -> torch.Tensor | None:
    """`config.residual_scale` as a (1, C, 1, 1) tensor, or None when it is (); a ConfigError if it has not C values."""
    if not config.residual_scale:
        return None
    if len(config.residual_scale) != channels:
        raise ConfigError(f"sampler.residual_scale has {len(config.residual_scale)} values for {channels} target "
                         "channels; give one per channel (or [] for none)")
    return torch.tensor(config.residual_scale, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
