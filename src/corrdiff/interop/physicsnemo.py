"""PhysicsNeMo's CorrDiff networks as corrdiff networks, and back: architecture options and weights.

PhysicsNeMo (and Modulus before it) builds CorrDiff from the same DDPM++ UNet as corrdiff: `SongUNetPosEmbd`
(or `SongUNet`) wrapped in `CorrDiffRegressionUNet` (formerly `UNet`) for the mean and in
`EDMPrecondSuperResolution` (formerly `EDMPrecondSR`) for the residual denoiser. The computation is the same;
what differs is where the weights sit and a few conventions, each handled here in one place:

- names: `enc.<res>x<res>_block<i>` / `dec.…` modules in a dict ↔ corrdiff's `encoder.<n>` / `decoder.<n>` lists;
  `enc.<H>x<H>_conv` ↔ `input_conv`; `dec.<H>x<H>_aux_norm`/`_aux_conv` ↔ `out_norm`/`out_conv`;
- attention: PhysicsNeMo interleaves q, k, v per channel in the qkv convolution; corrdiff stacks q, then k, then v;
- the noise embedding: PhysicsNeMo feeds (sin, cos) to `map_layer0`, corrdiff (cos, sin): its columns swap halves;
- the regression wrapper feeds `img_out_channels` zero channels first and a zero noise level, so those input
  columns are dropped and the (constant) noise-embedding shift of every block is folded into its conv0 bias;
- the grid embedding: PhysicsNeMo's formulas (`sinusoidal`, `sinusoidal_octave`, `linear`, `test`) are not
  corrdiff's `sinusoidal`, so the exact grid (N, H, W) is carried as corrdiff's `learned` grid embedding;
- condition order: PhysicsNeMo conditions on [μ, y] when it conditions on the mean (`hr_mean_conditioning`),
  corrdiff on [y, μ];
- attention levels: PhysicsNeMo matches `attn_resolutions` against the height H >> level, corrdiff against the
  shorter side;
- `EDMPrecondSR(scale_cond_input=True)` (its default) scales the condition by c_in(σ) with the noisy image:
  corrdiff's `EDMPrecond(scale_condition=True)`.
The translation is exact up to float32 round-off (tests/interop). GroupNorm is the one place the two can differ
beyond it: PhysicsNeMo 2.x's GroupNorm in eval mode divides by the unbiased variance, in training mode (and in
corrdiff, and in torch) by the biased one; docs/interop.md gives the size of that difference.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from corrdiff.errors import CheckpointError
from corrdiff.interop.mdlus import MdlusFile
from corrdiff.models import UNetConfig
from corrdiff.networks import network_for

REGRESSION_CLASSES = ("CorrDiffRegressionUNet", "UNet")
DIFFUSION_CLASSES = ("EDMPrecondSuperResolution", "EDMPrecondSR")
NETWORK_TYPES = ("SongUNetPosEmbd", "SongUNet")
MODULE_ROOTS = ("physicsnemo", "modulus")

# PhysicsNeMo 2.2.2's constructor defaults, for arguments an older args.json does not record.
SONGUNET_DEFAULTS = dict(
    label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4, num_blocks=4,
    attn_resolutions=[16], dropout=0.10, label_dropout=0.0, embedding_type="positional", channel_mult_noise=1,
    encoder_type="standard", decoder_type="standard", resample_filter=[1, 1], checkpoint_level=0,
    additive_pos_embed=False, bottleneck_attention=True, use_apex_gn=False, act="silu", profile_mode=False,
    amp_mode=False)
POSEMBD_DEFAULTS = SONGUNET_DEFAULTS | dict(
    channel_mult=[1, 2, 2, 2, 2], attn_resolutions=[28], dropout=0.13, gridtype="sinusoidal", N_grid_channels=4,
    lead_time_mode=False, lead_time_channels=None, lead_time_steps=9, prob_channels=[])

# Options whose value decides the computation: the values corrdiff's network has (anything else is refused).
REQUIRED = dict(label_dim=(0,), augment_dim=(0,), channel_mult_noise=(1,), encoder_type=("standard",),
                decoder_type=("standard",), resample_filter=([1, 1],), additive_pos_embed=(False,),
                bottleneck_attention=(True,), act=("silu",), lead_time_mode=(False,), lead_time_channels=(None, 0),
                prob_channels=([],))
# Options with no effect on a float32 forward pass (memory, speed, training-only regularisation, profiling).
NO_EFFECT = ("use_fp16", "checkpoint_level", "use_apex_gn", "profile_mode", "amp_mode", "label_dropout",
             "lead_time_steps", "img_channels")
GRID_TYPES = ("sinusoidal", "sinusoidal_octave", "learnable", "linear", "test")
EXTERNAL_GRID_CHANNELS = 4  # Earth2Studio's CorrDiffTaiwan feeds its regression `SongUNet` a 4-channel grid
RESAMPLE_FILTER = torch.full((1, 1, 2, 2), 0.25)  # PhysicsNeMo's [1, 1] filter: 2×2 average / nearest


@dataclass
class Layout:
    """How one PhysicsNeMo network maps onto a corrdiff network (what `describe` found in its args.json)."""

    kind: str
    """"regression" or "diffusion"."""
    unet: UNetConfig
    network: str
    """PhysicsNeMo's `model_type`: SongUNetPosEmbd or SongUNet."""
    pn_height: int
    """The height PhysicsNeMo names its modules by (`enc.<H>x<H>_…`)."""
    embedding_type: str
    grid: torch.Tensor | None
    """(N, H, W) grid values PhysicsNeMo computes (None: none, or a learnable one held in the weights)."""
    grid_source: str
    mean_first: bool = False
    """Diffusion conditioned on the mean: PhysicsNeMo's condition is [μ, y]."""
    sigma_data: float | None = None
    sigma_range: tuple[float, float] = (0.0, math.inf)
    """The (sigma_min, sigma_max) PhysicsNeMo's samplers clamp their noise levels to."""
    scale_condition: bool = False
    """Diffusion: the condition is scaled by c_in(σ) (`EDMPrecondSR`'s `scale_cond_input`)."""
    notes: list[str] = field(default_factory=list)


def _refuse(where, message: str) -> CheckpointError:
    return CheckpointError(f"{where}: {message}")


def _check_class(archive: MdlusFile, kind: str | None) -> str:
    """The kind of network the archive holds; refuses classes and modules other than CorrDiff's."""
    root = archive.module.split(".")[0]
    if root not in MODULE_ROOTS or archive.extra:
        extra = f" with nested modules {sorted(archive.extra)}" if archive.extra else ""
        raise _refuse(archive.path, f"class {archive.module}.{archive.class_name}{extra} is not a PhysicsNeMo "
                                    "CorrDiff network")
    if archive.class_name in REGRESSION_CLASSES:
        found = "regression"
    elif archive.class_name in DIFFUSION_CLASSES:
        found = "diffusion"
    else:
        raise _refuse(archive.path, f"unsupported class {archive.class_name!r}: expected a regression network "
                                    f"({', '.join(REGRESSION_CLASSES)}) or a diffusion one ({', '.join(DIFFUSION_CLASSES)})")
    if kind is not None and found != kind:
        raise _refuse(archive.path, f"holds a {found} network ({archive.class_name}), not a {kind} one")
    return found


def _options(archive: MdlusFile) -> tuple[str, dict]:
    """PhysicsNeMo's model_type and the network's options, defaults filled in; unknown or unsupported ones refused."""
    args = dict(archive.args)
    network = args.pop("model_type", "SongUNetPosEmbd")
    if network not in NETWORK_TYPES:
        raise _refuse(archive.path, f"model_type {network!r} is not supported (corrdiff has {', '.join(NETWORK_TYPES)})")
    for key in ("img_resolution", "img_in_channels", "img_out_channels"):
        if key not in args:
            raise _refuse(archive.path, f"args.json has no {key}")
    wrapper = {k: args.pop(k) for k in ("img_resolution", "img_in_channels", "img_out_channels", "sigma_data",
                                        "sigma_min", "sigma_max", "scale_cond_input") if k in args}
    defaults = POSEMBD_DEFAULTS if network == "SongUNetPosEmbd" else SONGUNET_DEFAULTS
    unknown = sorted(set(args) - set(defaults) - set(NO_EFFECT))
    if unknown:
        raise _refuse(archive.path, f"unknown {network} option {unknown[0]!r} (PhysicsNeMo 2.2.2 has no such argument)")
    options = defaults | args | wrapper
    for key, accepted in REQUIRED.items():
        if key in options and options[key] not in accepted:
            raise _refuse(archive.path, f"option {key}={options[key]!r} is not supported by corrdiff (only "
                                        f"{' or '.join(map(repr, accepted))})")
    return network, options


MAX_PIXELS = 1 << 26  # 8192² points: the largest image args.json may describe (its grid embedding is built)


def _image_shape(archive: MdlusFile, value) -> tuple[int, int]:
    shape = (value, value) if isinstance(value, int) else tuple(value)
    if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise _refuse(archive.path, f"img_resolution {value!r} is not a size (H, W)")
    if shape[0] * shape[1] > MAX_PIXELS:
        raise _refuse(archive.path, f"img_resolution {list(shape)} is {shape[0] * shape[1]:,} points, above the ceiling "
                                    f"of {MAX_PIXELS:,}; not built")
    return shape


def physicsnemo_grid(gridtype: str, channels: int, shape: tuple[int, int]) -> torch.Tensor:
    """The fixed grid embedding (channels, H, W) that PhysicsNeMo's SongUNetPosEmbd computes for `gridtype`.

    Written from PhysicsNeMo's formulas, evaluated as it does (float64, then float32): coordinates run over
    [0, 2π] endpoints included (`sinusoidal*`), [-1, 1] (`linear`) or are pixel indices (`test`).
    """
    height, width = shape
    if gridtype == "sinusoidal" and channels == 4:
        x, y = np.meshgrid(np.linspace(0, 2 * np.pi, width), np.linspace(0, 2 * np.pi, height))
        planes = [np.sin(x), np.sin(y), np.cos(x), np.cos(y)]
    elif gridtype in ("sinusoidal", "sinusoidal_octave") and channels % 4 == 0 and channels > 0:
        count = channels // 4
        # The legacy formula spaces its bands by 2**linspace(0, n, n), which are not octaves for n > 1.
        bands = 2.0 ** (np.linspace(0.0, count, num=count) if gridtype == "sinusoidal" else np.arange(count))
        x, y = np.meshgrid(np.linspace(0, 2 * np.pi, width), np.linspace(0, 2 * np.pi, height))
        planes = [fn(coord * band) for band in bands for fn in (np.sin, np.cos) for coord in (x, y)]
    elif gridtype == "linear" and channels == 2:
        # PhysicsNeMo meshes x along rows and y along columns here: on a non-square grid only H == W makes sense.
        x_axis, y_axis = np.linspace(-1, 1, width), np.linspace(-1, 1, height)
        planes = list(np.meshgrid(x_axis, y_axis))
    elif gridtype == "test" and channels == 2:
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        planes = [rows, cols]
    else:
        raise ValueError(f"gridtype {gridtype!r} with {channels} channels is not one PhysicsNeMo builds")
    return torch.from_numpy(np.stack(planes).astype(np.float64)).to(torch.float32)


def _attention_levels(archive: MdlusFile, resolutions, height: int, levels: int) -> list[int]:
    found = [level for level in range(levels) if (height >> level) in list(resolutions)]
    unused = sorted(set(resolutions) - {height >> level for level in found})
    if unused:
        raise _refuse(archive.path, f"attn_resolutions {list(resolutions)}: {unused} match no level of this UNet "
                                    f"(its heights are {[height >> l for l in range(levels)]})")
    return found


def _grid(archive: MdlusFile, network: str, options: dict, shape, extra_inputs: int, kind: str):
    """(grid_embedding, grid_channels, fixed values or None, description, inputs left for data channels)."""
    if network == "SongUNetPosEmbd":
        channels, gridtype = int(options["N_grid_channels"]), options["gridtype"]
        if gridtype not in GRID_TYPES:
            raise _refuse(archive.path, f"gridtype {gridtype!r} is not one of PhysicsNeMo's {GRID_TYPES}")
        if channels == 0:
            return "none", 0, None, "none", extra_inputs
        if gridtype == "learnable":
            return "learned", channels, None, "learnable (from the weights)", extra_inputs - channels
        try:
            values = physicsnemo_grid(gridtype, channels, shape)
        except ValueError as err:
            raise _refuse(archive.path, str(err)) from None
        return "learned", channels, values, f"{gridtype} (computed)", extra_inputs - channels
    if kind == "regression" and extra_inputs == EXTERNAL_GRID_CHANNELS:
        values = physicsnemo_grid("sinusoidal", EXTERNAL_GRID_CHANNELS, shape)
        return "learned", EXTERNAL_GRID_CHANNELS, values, "sinusoidal, fed as input channels", 0
    return "none", 0, None, "none", extra_inputs


def describe(archive: MdlusFile, input_channels: int, output_channels: int, kind: str | None = None) -> Layout:
    """How `archive` maps onto a corrdiff network with `input_channels` conditioning channels (inputs and static
    fields) and `output_channels` targets; a CheckpointError naming the option corrdiff lacks otherwise."""
    kind = _check_class(archive, kind)
    network, options = _options(archive)
    shape = _image_shape(archive, options["img_resolution"])
    if int(options["img_out_channels"]) != output_channels:
        raise _refuse(archive.path, f"predicts {options['img_out_channels']} channels, but {output_channels} target "
                                    "channels were given")
    embedding = options["embedding_type"]
    notes = [f"{key}={options[key]!r} ignored (no effect on the outputs)" for key in NO_EFFECT
             if key in archive.args and archive.args[key] not in (False, 0, None, [], "")]
    scale_condition = _scale_condition(archive, options)
    if kind == "diffusion":
        if embedding not in ("positional", "fourier"):
            raise _refuse(archive.path, f"embedding_type={embedding!r}: a diffusion network needs a noise embedding "
                                        "(positional or fourier)")
    elif embedding not in ("positional", "fourier", "zero"):
        raise _refuse(archive.path, f"embedding_type={embedding!r} is not one PhysicsNeMo builds")
    grid_kind, grid_channels, grid_values, grid_source, left = _grid(
        archive, network, options, shape, int(options["img_in_channels"]) - input_channels, kind)
    mean_first = False
    if kind == "diffusion" and left == output_channels:
        mean_first, left = True, 0
    if left != 0:
        expected = f"{input_channels} condition channels" + (f" (+{output_channels} for the mean)" if kind == "diffusion"
                                                             else "")
        raise _refuse(archive.path, f"img_in_channels={options['img_in_channels']} does not fit {expected} "
                                    f"and {grid_channels} grid channels ({grid_source})")
    levels = len(options["channel_mult"])
    attention = _attention_levels(archive, options["attn_resolutions"], shape[0], levels)
    try:
        unet = UNetConfig(
            img_shape=shape, in_channels=input_channels, out_channels=output_channels,
            model_channels=int(options["model_channels"]), channel_mult=tuple(options["channel_mult"]),
            channel_mult_emb=int(options["channel_mult_emb"]), num_blocks=int(options["num_blocks"]),
            attn_resolutions=tuple(min(shape) >> level for level in attention), dropout=float(options["dropout"]),
            noise_embedding=embedding if kind == "diffusion" else "positional", grid_embedding=grid_kind,
            grid_channels=grid_channels, num_heads=1, condition_on_mean=mean_first)
        with torch.device("meta"):  # its layers only: nothing is allocated for what args.json asks
            check_group_norms(network_for(unet, kind, 0.5))
    except ValueError as err:
        raise _refuse(archive.path, f"no corrdiff network has this architecture ({err})") from None
    sigma_data = float(options.get("sigma_data", 0.5)) if kind == "diffusion" else None
    sigma_range = (float(options.get("sigma_min", 0.0)), float(options.get("sigma_max", math.inf)))
    return Layout(kind, unet, network, shape[0], embedding, grid_values, grid_source, mean_first, sigma_data,
                  sigma_range if kind == "diffusion" else (0.0, math.inf), scale_condition, notes)


def _scale_condition(archive: MdlusFile, options: dict) -> bool:
    """Whether a diffusion network scales its condition by c_in(σ): `EDMPrecondSR`'s `scale_cond_input`, which
    defaults to True (also in the Modulus releases before the argument existed, which always scaled it)."""
    value = options.get("scale_cond_input", True if archive.class_name == "EDMPrecondSR" else None)
    if archive.class_name != "EDMPrecondSR":
        if value is not None:
            raise _refuse(archive.path, f"scale_cond_input is an argument of EDMPrecondSR, not of {archive.class_name}")
        return False
    if not isinstance(value, bool):
        raise _refuse(archive.path, f"scale_cond_input={value!r} is not true or false")
    return value


def physicsnemo_groups(channels: int) -> int:
    """The GroupNorm group count PhysicsNeMo uses for `channels` (up to 32 groups of at least 4 channels)."""
    groups = min(32, (channels + 3) // 4)
    if channels % groups:
        raise ValueError(f"PhysicsNeMo cannot normalise {channels} channels in {groups} groups")
    return groups


def check_group_norms(net: torch.nn.Module) -> None:
    """ValueError when a GroupNorm of corrdiff's network `net` uses another group count than PhysicsNeMo's."""
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and module.num_groups != physicsnemo_groups(module.num_channels):
            raise ValueError(f"{name} normalises {module.num_channels} channels in {module.num_groups} groups, "
                             f"PhysicsNeMo in {physicsnemo_groups(module.num_channels)}")


RESIDUAL_STD_PROBLEM = ("this denoiser learnt the residual divided by its standard deviation "
                        "(diffusion.residual_normalization), which PhysicsNeMo's CorrDiff cannot sample")


def architecture_problem(unet: UNetConfig) -> str | None:
    """Why PhysicsNeMo's SongUNet cannot have the architecture `unet` (an option it lacks), or None."""
    if unet.num_heads != 1:
        return f"num_heads={unet.num_heads}: PhysicsNeMo's SongUNet has one attention head"
    if unet.global_context:
        return "global_context: PhysicsNeMo's networks have no global-context condition"
    return None


def physicsnemo_problem(meta, *networks: torch.nn.Module) -> str | None:
    """Why PhysicsNeMo's CorrDiff cannot run the networks of a checkpoint (`CheckpointMeta` `meta`, its loaded
    `networks`), or None when it can: what the export refuses, and what `sampler.arithmetic: physicsnemo` will
    not pretend to reproduce."""
    if meta.residual_std:
        return RESIDUAL_STD_PROBLEM
    problem = architecture_problem(meta.unet)
    if problem:
        return problem
    try:
        for net in networks:
            check_group_norms(net)
    except ValueError as err:
        return str(err)
    return None
