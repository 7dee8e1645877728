"""Per-channel value transforms for skewed non-negative channels, applied before normalisation.

A spec's `transforms` maps a variable to `log1p` (log(1 + x)) or `power:P` (x^P with P > 0, e.g. 0.5);
negative values are clipped to 0 before either. Each function takes numpy arrays or torch tensors and
gives back the same kind. This module is the one home of the transform syntax: the spec validates with
`parse_transform`, the statistics and the normalisation apply `forward_transform` / `inverse_transform`.
"""

import numpy as np
import torch

from corrdiff.errors import DataError


def parse_transform(text: str | None, name: str = "?"):
    """("log1p", None) | ("power", P) | (None, None); errors name the variable."""
    if text in (None, "", "none"):
        return None, None
    if text == "log1p":
        return "log1p", None
    kind, _, value = text.partition(":")
    if kind == "power":
        try:
            power = float(value)
        except ValueError:
            power = -1.0
        if power > 0:
            return "power", power
    raise DataError(f"transform of {name!r}: {text!r} is not one of 'log1p', 'power:P' (P > 0)")


def forward_transform(values, text: str | None):
    """`values` transformed by `text` (physical units → transformed units); unchanged for no transform."""
    kind, power = parse_transform(text)
    if kind is None:
        return values
    lib = torch if isinstance(values, torch.Tensor) else np
    values = lib.clip(values, 0, None)
    return lib.log1p(values) if kind == "log1p" else values**power


def inverse_transform(values, text: str | None):
    """`values` taken back from the transform `text` to physical units; unchanged for no transform."""
    kind, power = parse_transform(text)
    if kind is None:
        return values
    lib = torch if isinstance(values, torch.Tensor) else np
    return lib.expm1(lib.clip(values, 0, None)) if kind == "log1p" else lib.clip(values, 0, None) ** (1.0 / power)


def per_channel(values, transforms: list[str | None], function):
    """`values` (..., C, H, W) with `function(channel, transforms[c])` applied to each channel c."""
    parts = [function(values[..., c : c + 1, :, :], t) for c, t in enumerate(transforms)]
    return torch.cat(parts, dim=-3) if isinstance(values, torch.Tensor) else np.concatenate(parts, axis=-3)
