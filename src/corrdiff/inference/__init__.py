"""Inference: ensemble generation, its checks and fingerprint, and the writer of the ensemble file
(layout: `corrdiff.ensemble_file`)."""

from corrdiff.errors import OutputError
from corrdiff.inference.downscaling import downscale, load_models
from corrdiff.inference.fingerprint import Fingerprint
from corrdiff.inference.generate import generate
from corrdiff.inference.writer import EnsembleWriter

__all__ = ["EnsembleWriter", "Fingerprint", "OutputError", "downscale", "generate", "load_models"]
