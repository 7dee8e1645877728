"""Paired coarse/fine datasets: dataset specs, readers, regridding, normalisation and the demo dataset."""

from corrdiff.data.dataset import DownscalingDataset, open_coarse_on_fine, open_targets, PairedDataset, Sample
from corrdiff.data.fields import PairedFields
from corrdiff.data.normalization import ChannelStats, Normalization
from corrdiff.data.spec import DatasetSpec, load_spec
from corrdiff.data.stats import compute_stats, load_or_compute_stats
from corrdiff.errors import DataError


def build_demo_dataset(out_dir, progress: bool = True, force: bool = False, **options):
    """The spec path of the demo dataset built (or reused) in `out_dir`; needs `corrdiff[demo]`.

    The dataset is quasi-geostrophic turbulence (`corrdiff.data.qg_dataset.build_qg_dataset`, which takes the
    `options`); a DataError says how to install the optional dependencies when they are missing.
    """
    # Imported here, not at the top: jax and pyqg-jax are optional and `import corrdiff.data` must work without.
    try:
        from corrdiff.data.qg_dataset import build_qg_dataset
    except ImportError as err:
        raise DataError(f"the demo dataset needs the optional dependencies of corrdiff[demo] ({err}); "
                        "install them with: pip install 'corrdiff[demo]'") from None
    return build_qg_dataset(out_dir, progress=progress, force=force, **options)


__all__ = ["build_demo_dataset", "ChannelStats", "compute_stats", "DataError", "DatasetSpec", "DownscalingDataset",
           "load_or_compute_stats", "load_spec", "Normalization", "open_coarse_on_fine", "open_targets",
           "PairedDataset", "PairedFields", "Sample"]
