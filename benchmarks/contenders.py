"""The two contenders built with the same hyperparameters: corrdiff's networks and PhysicsNeMo's reference ones.

Each contender gives a regression network (condition → mean), a diffusion denoiser (noisy residual, σ,
condition → denoised residual), a regression loss, a residual-diffusion loss and an ensemble sampler, all
with one calling convention so that the benchmarks can run them turn about. The reference is PhysicsNeMo's
CorrDiff (2.2): `SongUNetPosEmbd` (sinusoidal grid embedding, 4 channels) wrapped in `CorrDiffRegressionUNet`
for the regression step and in `EDMPrecondSuperResolution` for the diffusion step, its `RegressionLoss` and
`ResidualLoss`, and its `stochastic_sampler`. It is only importable in .venv-bench (see benchmarks/setup_venv.sh).
"""

from dataclasses import dataclass
from typing import Callable

import torch

from corrdiff.config import DiffusionSection
from corrdiff.diffusion import diffusion_network, EDMPrecond, SamplerConfig, sample_ensemble
from corrdiff.diffusion.losses import regression_loss
from corrdiff.models import presets, UNetConfig
from corrdiff.perf import autocast, FastPath, prepare_denoiser, to_channels_last


def reference_available() -> str | None:
    """None when PhysicsNeMo can be imported, else why not."""
    try:
        import physicsnemo.diffusion.preconditioners  # noqa: F401
        import physicsnemo.models.diffusion_unets  # noqa: F401
    except Exception as err:  # ImportError, or a torchvision/torch mismatch surfacing as RuntimeError
        return f"{type(err).__name__}: {err}"
    return None


@dataclass
class Contender:
    name: str
    regression: torch.nn.Module
    denoiser: torch.nn.Module
    regression_loss: Callable  # (condition, target) -> scalar
    diffusion_loss: Callable  # (condition, target) -> scalar, against the frozen regression
    sample: Callable  # (condition (1, C_in, H, W), members, seed) -> (members, C_out, H, W)
    denoise: Callable  # (x, sigma, condition) -> denoised, one network evaluation

    def parameters(self) -> int:
        return sum(p.numel() for p in self.denoiser.parameters())


def config_for(shape: tuple[int, int], preset: str = "paper") -> UNetConfig:
    """The preset at another grid size; attention stays at the levels whose side is listed (28 at 448)."""
    return presets[preset].replace(img_shape=tuple(shape), dropout=0.0)


def ours(config: UNetConfig, device, sampler: SamplerConfig, fast: FastPath | None = None, seed: int = 0) -> Contender:
    """corrdiff's networks, weights drawn from `seed` (so the plain and the fast contender hold the same ones).

    With `fast`, the networks run on that fast path as generation runs them: the regression in channels-last
    and bf16 autocast as asked, the denoiser wrapped once by `prepare_denoiser` (compiled code and CUDA graphs
    are kept across calls). `Contender.denoiser` stays the bare EDMPrecond (its parameters, modes, gradients).
    """
    torch.manual_seed(seed)
    regression = config.build_regression().to(device)
    denoiser = EDMPrecond(diffusion_network(config), sigma_data=DiffusionSection().sigma_data).to(device)
    fast = fast or FastPath()
    if fast.channels_last:
        to_channels_last(regression)
    net = prepare_denoiser(denoiser, fast)
    edm = DiffusionSection().edm_loss()

    def diffusion_loss(condition, target):
        with torch.no_grad():
            mean = regression(condition)
        return edm(net, target - mean, condition)

    @torch.no_grad()
    def sample(condition, members, seed):
        with autocast(fast.bf16, condition.device):
            mean = regression(condition).float()
        return sample_ensemble(net, mean, condition, range(members), seed, sampler)

    name = "corrdiff" if fast == FastPath() else "corrdiff fast"
    return Contender(name, regression, denoiser, lambda c, t: regression_loss(regression, c, t),
                     diffusion_loss, sample, lambda x, s, c: net(x, s, c))


def reference(config: UNetConfig, device, sampler: SamplerConfig) -> Contender:
    """PhysicsNeMo's CorrDiff networks with `config`'s hyperparameters."""
    from physicsnemo.diffusion.metrics import RegressionLoss, ResidualLoss
    from physicsnemo.diffusion.preconditioners import EDMPrecondSuperResolution
    from physicsnemo.diffusion.samplers import stochastic_sampler
    from physicsnemo.models.diffusion_unets import CorrDiffRegressionUNet

    height, width = config.img_shape
    # As PhysicsNeMo's CorrDiff example does, the grid channels are counted in img_in_channels; the
    # regression wrapper also feeds img_out_channels zero channels (the diffusion network's layout).
    in_channels = config.in_channels + config.grid_channels
    common = dict(model_channels=config.model_channels, channel_mult=list(config.channel_mult),
                  channel_mult_emb=config.channel_mult_emb, num_blocks=config.num_blocks,
                  attn_resolutions=list(config.attn_resolutions), dropout=config.dropout,
                  gridtype=config.grid_embedding, N_grid_channels=config.grid_channels)
    regression = CorrDiffRegressionUNet(img_resolution=[height, width], img_in_channels=in_channels,
                                        img_out_channels=config.out_channels, model_type="SongUNetPosEmbd",
                                        embedding_type="zero", **common).to(device)
    denoiser = EDMPrecondSuperResolution(img_resolution=[height, width], img_in_channels=in_channels,
                                         img_out_channels=config.out_channels, model_type="SongUNetPosEmbd",
                                         **common).to(device)
    reg_loss, res_loss = RegressionLoss(), ResidualLoss(regression_net=regression, hr_mean_conditioning=False)

    def regression_step_loss(condition, target):
        return reg_loss(regression, target, condition).mean()

    def diffusion_step_loss(condition, target):
        loss = res_loss(denoiser, target, condition)
        return (loss[0] if isinstance(loss, tuple) else loss).mean()

    @torch.no_grad()
    def sample(condition, members, seed):
        mean = regression(torch.zeros(1, config.out_channels, height, width, device=condition.device), condition)
        gen = torch.Generator(device=condition.device).manual_seed(seed)
        latents = torch.randn(members, config.out_channels, height, width, generator=gen, device=condition.device)
        residual = stochastic_sampler(denoiser, latents, condition.expand(members, -1, -1, -1),
                                      num_steps=sampler.num_steps, sigma_min=sampler.sigma_min,
                                      sigma_max=sampler.sigma_max, rho=sampler.rho, S_churn=sampler.S_churn,
                                      S_min=sampler.S_min, S_max=sampler.S_max, S_noise=sampler.S_noise)
        return mean + residual

    return Contender("physicsnemo", regression, denoiser, regression_step_loss, diffusion_step_loss, sample,
                     lambda x, s, c: denoiser(x, c, s))
