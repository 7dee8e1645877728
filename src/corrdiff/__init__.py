"""corrdiff: generative km-scale atmospheric downscaling with residual corrective diffusion.

`corrdiff.load(path)` gives a `corrdiff.Downscaler` (the Python API, `corrdiff.api`; docs/api.md), and
`corrdiff.open_inputs(paths, variables, rename=...)` reads coarse files as a spec's inputs are read. They are
imported on first use, so that `import corrdiff` (and `corrdiff --help`) stays quick without torch.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what __getattr__ gives, written as an import so that the package graph records it
    from corrdiff.api import Downscaler, load
    from corrdiff.data.open_inputs import open_inputs

_API = ("Downscaler", "load")
_DATA = ("open_inputs",)
__all__ = ["__version__", *_API, *_DATA]


def __getattr__(name: str):
    """`corrdiff.load` and `corrdiff.Downscaler`, from `corrdiff.api` when first asked for (PEP 562)."""
    if name in _API:
        return getattr(importlib.import_module("corrdiff.api"), name)
    if name in _DATA:
        return getattr(importlib.import_module("corrdiff.data.open_inputs"), name)
    raise AttributeError(f"module 'corrdiff' has no attribute {name!r}")
