"""Paired coarse/fine datasets: dataset specs, readers, regridding, normalisation and the demo dataset."""

from corrdiff.data.dataset import DownscalingDataset, open_coarse_on_fine, open_targets, Sample
from corrdiff.errors import DataError
from corrdiff.data.fields import PairedFields
from corrdiff.data.spec import DatasetSpec, load_spec
from corrdiff.data.stats import compute_stats, load_or_compute_stats, Normalization


def build_demo(out_dir, progress: bool = True, force: bool = False, **options):
    """Build (or reuse) the embedded demo dataset in `out_dir`; returns its spec path (needs `corrdiff[demo]`)."""
    try:
        from corrdiff.data.demo import build_demo as _build
    except ImportError as err:
        raise DataError(f"the demo dataset needs the optional dependencies of corrdiff[demo] ({err}); "
                        "install them with: pip install 'corrdiff[demo]'") from None
    return _build(out_dir, progress=progress, force=force, **options)


__all__ = ["build_demo", "compute_stats", "DataError", "DatasetSpec", "DownscalingDataset", "load_or_compute_stats",
           "load_spec", "Normalization", "open_coarse_on_fine", "open_targets", "PairedFields", "Sample"]
