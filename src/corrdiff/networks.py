"""The networks a checkpoint describes: built untrained from its description (`network_for`, `build_network`),
and loaded with its weights, which must be finite and fit (`load_weights`, `load_network`)."""

from pathlib import Path

import torch
from torch import nn

from corrdiff.checkpoint import CheckpointMeta, MODEL_FILE, MODEL_META, ModelCheckpoint
from corrdiff.diffusion import ConsistencyPrecond, diffusion_network, EDMPrecond
from corrdiff.errors import CheckpointError, one_line
from corrdiff.models import UNetConfig
from corrdiff.state_tensors import nonfinite_tensors


def network_for(unet: UNetConfig, kind: str, sigma_data: float | None = None,
                scale_condition: bool = False, student_sigma_min: float | None = None) -> nn.Module:
    """The untrained network of a `kind` of checkpoint: the regression UNet, the EDM denoiser, or with
    `student_sigma_min` (ε) a consistency student of the same network."""
    if kind == "regression":
        return unet.build_regression()
    if student_sigma_min is not None:
        return ConsistencyPrecond(diffusion_network(unet), sigma_data, student_sigma_min, scale_condition)
    return EDMPrecond(diffusion_network(unet), sigma_data=sigma_data, scale_condition=scale_condition)


def build_network(meta: CheckpointMeta) -> nn.Module:
    """The untrained network a checkpoint's weights belong to."""
    return network_for(meta.unet, meta.kind, meta.sigma_data, meta.scale_condition,
                       meta.student.sigma_min if meta.student is not None else None)


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Load `weights` into `module`; a CheckpointError naming `where` if they are not finite or do not fit."""
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(f"{where}: holds non-finite weights (NaN or infinity, in {', '.join(bad[:3])}"
                              f"{', …' if len(bad) > 3 else ''}): training had diverged; use an earlier checkpoint")
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{where}: the weights do not fit the network {MODEL_META} describes "
                              f"({one_line(err)})") from None


def load_network(checkpoint: ModelCheckpoint, device="cpu") -> nn.Module:
    """The checkpoint's EMA network on `device`, frozen (eval mode, no gradients)."""
    try:
        net = build_network(checkpoint.meta)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint.path / MODEL_META}: describes a network that cannot be built "
                              f"({one_line(err)})") from None
    load_weights(net, checkpoint.weights, checkpoint.path / MODEL_FILE)
    return net.to(device).eval().requires_grad_(False)
