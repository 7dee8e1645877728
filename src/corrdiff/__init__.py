"""corrdiff: generative km-scale atmospheric downscaling with residual corrective diffusion."""

__version__ = "0.1.0"
