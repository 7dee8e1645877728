"""The two contenders built with the same hyperparameters: corrdiff's networks and PhysicsNeMo's reference ones.

Each contender gives a regression network (condition → mean), a diffusion denoiser (noisy residual, σ,
condition → denoised residual), a regression loss, a residual-diffusion loss and an ensemble sampler, all
with one calling convention so that the benchmarks can run them turn about. The reference is PhysicsNeMo's
CorrDiff (2.2): `SongUNetPosEmbd` (sinusoidal grid embedding, 4 channels) wrapped in `CorrDiffRegressionUNet`
for the regression step and in `EDMPrecondSuperResolution` for the diffusion step, its `RegressionLoss` and
`ResidualLoss`, and its `stochastic_sampler`. It is only importable in .venv-bench (see benchmarks/setup_venv.sh).
The reference runs plain ("reference") or with its own best switches ("reference fast", `ReferenceSwitches`).
"""

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from corrdiff.config import DiffusionSection
from corrdiff.diffusion import diffusion_network, EDMPrecond, SamplerConfig, sample_ensemble
from corrdiff.diffusion.losses import regression_loss
from corrdiff.models import presets, UNetConfig
from corrdiff.fast_path import autocast, CompiledOrEager, FastPath, prepare_denoiser, to_channels_last


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
    compiled_net: CompiledOrEager | None = None  # the compiled denoiser, when compiling was asked for

    def parameters(self) -> int:
        return sum(p.numel() for p in self.denoiser.parameters())

    def ran_compiled(self) -> bool | None:
        """None: compiling was not asked for; else whether the denoiser's calls really ran compiled code."""
        return None if self.compiled_net is None else self.compiled_net.ran_compiled


def compiled_part(net: torch.nn.Module) -> CompiledOrEager | None:
    """The CompiledOrEager inside a prepared denoiser (`FastDenoiser.net`), if any."""
    inner = getattr(net, "net", net)
    return inner if isinstance(inner, CompiledOrEager) else None


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
                     diffusion_loss, sample, lambda x, s, c: net(x, s, c), compiled_part(net))


def apex_available() -> bool:
    """Whether NVIDIA Apex (the fused GroupNorm PhysicsNeMo can use on CUDA) is importable."""
    try:
        import apex.contrib.group_norm  # noqa: F401
    except Exception:  # ImportError, or an Apex built for another torch/CUDA
        return False
    return True


@dataclass(frozen=True)
class ReferenceSwitches:
    """The reference's own speed switches, as its CorrDiff generation and training offer them.

    `amp_mode` is always on (PhysicsNeMo refuses to run under autocast without it; in float32 it changes no
    bit). "reference fast" adds channels-last, `torch.compile` where asked, Apex GroupNorm where Apex is
    importable on CUDA, and fp16 weights (`use_fp16`, CUDA only) where the caller runs it without autocast.
    """

    channels_last: bool = False
    compile: bool = False
    apex_gn: bool = False
    fp16: bool = False

    @classmethod
    def fast(cls, device, compile: bool = False, fp16: bool = False) -> "ReferenceSwitches":
        on_cuda = torch.device(device).type == "cuda"
        return cls(channels_last=True, compile=compile, apex_gn=on_cuda and apex_available(), fp16=fp16 and on_cuda)


def reference(config: UNetConfig, device, sampler: SamplerConfig, switches: ReferenceSwitches | None = None,
              seed: int = 0) -> Contender:
    """PhysicsNeMo's CorrDiff networks with `config`'s hyperparameters, plain or with `switches`."""
    switches = switches or ReferenceSwitches()
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
                  gridtype=config.grid_embedding, N_grid_channels=config.grid_channels,
                  amp_mode=True, use_apex_gn=switches.apex_gn)
    torch.manual_seed(seed)
    regression = CorrDiffRegressionUNet(img_resolution=[height, width], img_in_channels=in_channels,
                                        img_out_channels=config.out_channels, model_type="SongUNetPosEmbd",
                                        embedding_type="zero", **common).to(device)
    denoiser = EDMPrecondSuperResolution(img_resolution=[height, width], img_in_channels=in_channels,
                                         img_out_channels=config.out_channels, model_type="SongUNetPosEmbd",
                                         **common).to(device)
    if switches.fp16:  # PhysicsNeMo's own half precision: fp16 weights, fp16 forward on CUDA
        regression.use_fp16 = denoiser.use_fp16 = True
    if switches.channels_last:
        to_channels_last(regression), to_channels_last(denoiser)
    compiled = CompiledOrEager(denoiser) if switches.compile else None
    net = compiled or denoiser
    reg_loss, res_loss = RegressionLoss(), ResidualLoss(regression_net=regression, hr_mean_conditioning=False)

    def regression_step_loss(condition, target):
        return reg_loss(regression, target, condition).mean()

    def diffusion_step_loss(condition, target):
        loss = res_loss(net, target, condition)
        return (loss[0] if isinstance(loss, tuple) else loss).mean()

    @torch.no_grad()
    def sample(condition, members, seed):
        mean = regression(torch.zeros(1, config.out_channels, height, width, device=condition.device), condition)
        gen = torch.Generator(device=condition.device).manual_seed(seed)
        latents = torch.randn(members, config.out_channels, height, width, generator=gen, device=condition.device)
        residual = stochastic_sampler(net, latents, condition.expand(members, -1, -1, -1),
                                      num_steps=sampler.num_steps, sigma_min=sampler.sigma_min,
                                      sigma_max=sampler.sigma_max, rho=sampler.rho, S_churn=sampler.S_churn,
                                      S_min=sampler.S_min, S_max=sampler.S_max, S_noise=sampler.S_noise)
        return mean + residual

    name = "reference fast" if switches != ReferenceSwitches() else "reference"
    return Contender(name, regression, denoiser, regression_step_loss, diffusion_step_loss, sample,
                     lambda x, s, c: net(x, c, s), compiled)


@contextlib.contextmanager
def _cpu_autocast_as_cuda(device):
    """On CPU, `torch.is_autocast_enabled()` (no argument) answers for CPU autocast too, as it does for CUDA's.

    PhysicsNeMo's output dtype check asks that argument-less question, which is about CUDA only: under CPU
    autocast it refuses the bf16 output that CUDA autocast lets through. This stand-in makes a CPU run take
    the CUDA run's path; on CUDA nothing changes.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    real = torch.is_autocast_enabled
    torch.is_autocast_enabled = lambda *args: real(*args) if args else real("cpu") or real("cuda")
    try:
        yield
    finally:
        torch.is_autocast_enabled = real


def smoke_run(device="cpu", shape=(16, 16), preset: str = "tiny") -> dict:
    """Every contender's calls once under bf16 autocast (as the bf16 benchmark rows run them): finite results.

    Also checks that the reference's amp_mode changes no bit in float32. Returns {contender: {call: ok}}
    and raises on the first failing call. The reference is included when it is importable.
    """
    config = config_for(shape, preset)
    sampler = SamplerConfig(num_steps=2)
    contenders = [ours(config, device, sampler), ours(config, device, sampler, FastPath(channels_last=True))]
    if reference_available() is None:
        contenders += [reference(config, device, sampler),
                       reference(config, device, sampler, ReferenceSwitches.fast(device))]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, config.out_channels, *shape, generator=gen).to(device)
    condition = torch.randn(2, config.in_channels, *shape, generator=gen).to(device)
    sigma = torch.tensor([0.5, 2.0], device=device)
    report = {}
    for contender in contenders:
        checks = {}
        with autocast(True, device), _cpu_autocast_as_cuda(device):
            checks["denoise"] = contender.denoise(x, sigma, condition)
            checks["regression loss"] = contender.regression_loss(condition, x)
            checks["regression loss"].backward()
            checks["diffusion loss"] = contender.diffusion_loss(condition, x)
            checks["diffusion loss"].backward()
            checks["sample"] = contender.sample(condition[:1], 2, 0)
        bad = [call for call, value in checks.items() if not torch.isfinite(value.float()).all()]
        if bad:
            raise RuntimeError(f"{contender.name}: non-finite {', '.join(bad)} under bf16 autocast")
        report[contender.name] = {call: True for call in checks}
    if reference_available() is None:  # amp_mode=True against False, float32: the same bits
        net = reference(config, device, sampler).denoiser.eval()
        with torch.no_grad():
            with_amp = net(x, condition, sigma)
            net.amp_mode = False
            report["amp_mode bit-identical in float32"] = bool(torch.equal(with_amp, net(x, condition, sigma)))
    return report


if __name__ == "__main__":  # the benchmark tests run this in .venv-bench, where the reference is importable
    import json
    import sys

    print(json.dumps(smoke_run(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
