"""Inference: ensemble generation and the CF NetCDF/Zarr writer."""

from corrdiff.inference.generate import downscale, generate, load_models
from corrdiff.inference.writer import EnsembleWriter, OutputError

__all__ = ["EnsembleWriter", "OutputError", "downscale", "generate", "load_models"]
