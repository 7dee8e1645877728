"""corrdiff: generative km-scale atmospheric downscaling with residual corrective diffusion.

`corrdiff.load(path)` gives a `corrdiff.Downscaler` (the Python API, `corrdiff.api`; docs/api.md). Both are
imported on first use, so that `import corrdiff` (and `corrdiff --help`) stays quick without torch.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what __getattr__ gives, written as an import so that the package graph records it
    from corrdiff.api import Downscaler, load

_API = ("Downscaler", "load")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """`corrdiff.load` and `corrdiff.Downscaler`, from `corrdiff.api` when first asked for (PEP 562)."""
    if name in _API:
        return getattr(importlib.import_module("corrdiff.api"), name)
    raise AttributeError(f"module 'corrdiff' has no attribute {name!r}")
