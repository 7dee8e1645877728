"""What an ensemble file records about where its fields came from: the input's forecast context (reference
and lead time of each valid time), the input files, and the fine grid's projection (a CF grid mapping with
its projection coordinates). `inference/generate.py` passes `OutputContext` on to the writer."""

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from corrdiff.data.canonical import LEAD_TIME, PROJECTION_ATTRS, projected_xy, REFERENCE_TIME
from corrdiff.data.readers import file_grid_mapping
from corrdiff.data.spec import Source
from corrdiff.inference.checks import input_files

log = logging.getLogger(__name__)
LISTED_FILES = 50  # input files named one by one in the attributes; more are counted


@dataclass(frozen=True)
class OutputContext:
    """Extra coordinates ({name: (dims, values, attrs)}), global attributes and the grid mapping of an output."""

    coords: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    grid_mapping: dict | None = None

    def template_options(self) -> dict:
        """Keyword arguments of `ensemble_file.template` (and `EnsembleWriter`)."""
        return {"coords": self.coords, "grid_mapping": self.grid_mapping}


def output_context(dataset, times: np.ndarray) -> OutputContext:
    """The context of an ensemble of `dataset` (a DownscalingDataset, or any PairedDataset) at `times` (time,).

    The projection is the dataset's `grid_mapping` when it carries one (`CoarseInputs` of a model package), else
    that of the file defining the fine grid of its spec.
    """
    coords = forecast_coords(dataset, times)
    mapping = getattr(dataset, "grid_mapping", None) or fine_grid_mapping(getattr(dataset, "spec", None))
    if mapping is not None:
        xy = projected_xy(mapping, dataset.lat, dataset.lon)
        if xy is None:  # CF wants the projection coordinates beside a grid mapping; without them, leave it out
            log.info(f"the fine grid's projection {mapping.get('grid_mapping_name')!r} is not kept in the output")
            mapping = None
        else:
            coords["projection_x"] = (("x",), xy[0], dict(PROJECTION_ATTRS["x"]))
            coords["projection_y"] = (("y",), xy[1], dict(PROJECTION_ATTRS["y"]))
    return OutputContext(coords, input_attrs(dataset), mapping)


def forecast_coords(dataset, times: np.ndarray) -> dict:
    """`forecast_reference_time` and `lead_time` (hours) at `times`, from the first input that has them
    (`corrdiff.data.canonical` keeps them along a forecast's valid times); {} when none has them at every time."""
    times = np.asarray(times, dtype="datetime64[ns]")
    for source in getattr(getattr(dataset, "fields", None), "inputs", []):
        array = source.array
        if REFERENCE_TIME not in array.coords or LEAD_TIME not in array.coords:
            continue
        positions = pd.Index(np.asarray(array["time"].values, dtype="datetime64[ns]")).get_indexer(times)
        if (positions < 0).any():
            continue
        return {name: (("time",), np.asarray(array[name].values)[positions], dict(array[name].attrs))
                for name in (REFERENCE_TIME, LEAD_TIME)}
    return {}


def input_attrs(dataset) -> dict:
    """Global attributes naming the input files (the first LISTED_FILES, then a count) and the spec file."""
    files, spec_file = input_files(dataset)
    attrs = {}
    if files:
        listed = "; ".join(str(f) for f in files[:LISTED_FILES])
        attrs["corrdiff_input_files"] = listed + (f"; … and {len(files) - LISTED_FILES} more"
                                                  if len(files) > LISTED_FILES else "")
    if spec_file is not None:
        attrs["corrdiff_dataset_spec"] = str(spec_file)
    return attrs


def fine_grid_mapping(spec) -> dict | None:
    """CF grid-mapping attributes of the file that defines the fine grid (the spec's `grid`, else the first
    target file, else the first static file); None for a lat/lon grid, GRIB, or no spec."""
    if spec is None:
        return None
    if spec.grid:
        what, source = "grid", Source(paths=spec.grid, variables=["grid"])
    else:
        what, source = ("targets", spec.targets) if spec.targets is not None else ("static", spec.static)
    files = spec.files(source, what) if source is not None else []
    return file_grid_mapping(files[0], source.storage_options) if files else None
