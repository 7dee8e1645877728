import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from corrdiff.data import (compute_stats, DataError, DownscalingDataset, load_spec, Normalization,
                           open_coarse_on_fine, open_targets, PairedDataset, PairedFields)
from corrdiff.data.normalization import ChannelStats
from tests.data import fixtures


@pytest.fixture(scope="module")
def generic(tmp_path_factory) -> Path:
    return fixtures.write_generic(tmp_path_factory.mktemp("generic"))


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "stats.json"}


def test_samples_interpolate_stack_and_normalise(generic):
    fields = PairedFields(generic)
    assert fields.input_channels == ["t2m", "u10", "t@850", "orography"]
    assert fields.target_channels == ["t2m", "u10", "refl"]
    times = fields.times("train")
    inputs = fields.read_inputs(times[:2])
    # The coarse fields are linear in lat/lon, so bilinear interpolation reproduces them at the fine points.
    expected_t2m = 280 + fixtures.linear(fields.lat, fields.lon, 1.0)
    np.testing.assert_allclose(inputs[1, 0], expected_t2m, atol=1e-3)
    expected_t850 = 240 + fixtures.linear(fields.lat, fields.lon, 1.0, a=2)  # level 850 is the second level
    np.testing.assert_allclose(inputs[1, 2], expected_t850, atol=1e-3)
    np.testing.assert_allclose(inputs[0, 3], fixtures.static_dataset()["orography"].values)

    dataset = DownscalingDataset(generic, "train")
    sample = dataset[1]
    assert sample.input.shape == (4, 16, 24) and sample.target.shape == (3, 16, 24)
    assert sample.input.dtype == torch.float32 and sample.time == times[1]
    restored = dataset.stats.denormalize_target(sample.target)
    np.testing.assert_allclose(restored.numpy(), fields.read_targets(times[1:2])[0], rtol=1e-5, atol=1e-4)


def test_the_dataset_gives_what_paired_dataset_states(generic):
    dataset = DownscalingDataset(generic, "train")
    members = [name for name in vars(PairedDataset) if not name.startswith("_")] + ["__len__", "__getitem__"]
    assert all(hasattr(dataset, name) for name in members)
    assert dataset.lat.shape == dataset.lon.shape == (16, 24) and dataset.lat.dtype == np.float64
    assert dataset.times.dtype == np.dtype("datetime64[ns]") and len(dataset.times) == len(dataset)
    assert (np.diff(dataset.times) > np.timedelta64(0)).all() and dataset[0].time == dataset.times[0]
    assert isinstance(dataset.stats, Normalization) and set(dataset.target_attrs) == set(dataset.target_channels)


def test_streamed_statistics_equal_the_whole_split_at_once(generic):
    streamed = compute_stats(generic, "train", chunk_times=2, progress=False, save=False)
    fields = PairedFields(generic)
    times = fields.times("train")
    for stats, values in ((streamed.input, fields.read_inputs(times)), (streamed.target, fields.read_targets(times))):
        flat = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1).astype(np.float64)
        np.testing.assert_allclose(stats.mean, flat.mean(axis=1), rtol=1e-9)
        std = flat.std(axis=1, ddof=1)
        np.testing.assert_allclose(stats.std, np.where(std > 0, std, 1.0), rtol=1e-6)
    normalised = DownscalingDataset(generic, "train", stats=streamed)
    stacked = torch.stack([s.target for s in normalised])
    np.testing.assert_allclose(stacked.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(stacked.std(dim=(0, 2, 3)).numpy(), 1, atol=1e-3)


def test_statistics_round_trip_through_json_with_transforms(tmp_path):
    values = torch.rand(2, 2, 3, 4) * 40
    stats = Normalization(ChannelStats(["a"], [0.0], [1.0]),
                          ChannelStats(["refl", "rain"], [2.0, 0.5], [1.5, 0.3], ["power:0.5", "log1p"]))
    loaded = Normalization.load(stats.save(tmp_path / "stats.json"))
    assert loaded.to_dict() == stats.to_dict()
    np.testing.assert_allclose(loaded.denormalize_target(loaded.normalize_target(values)), values, rtol=1e-5)
    np.testing.assert_allclose(loaded.denormalize_target(loaded.normalize_target(values.numpy())), values, rtol=1e-5)
    transformed = loaded.normalize_target(values)[:, 1] * 0.3 + 0.5
    np.testing.assert_allclose(transformed, torch.log1p(values[:, 1]), rtol=1e-5)


def test_data_loader_workers_give_the_same_batches(generic):
    spec = load_spec(generic).model_copy(update={"load_into_memory": False})
    dataset = DownscalingDataset(spec, "train")
    collate = lambda batch: torch.stack([s.input for s in batch])
    single = list(torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate))
    multi = list(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate))
    for a, b in zip(single, multi, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    cached = DownscalingDataset(load_spec(generic).model_copy(update={"load_into_memory": True}), "train")
    torch.testing.assert_close(cached[4].input, dataset[4].input, rtol=0, atol=0)


def test_zarr_v3_stores_read_like_netcdf(tmp_path, generic):
    spec = fixtures.write_generic(tmp_path / "zarr", fmt="zarr")
    from_zarr = PairedFields(spec)
    from_netcdf = PairedFields(generic)
    times = from_netcdf.times("test")
    np.testing.assert_array_equal(from_zarr.times("test"), times)
    np.testing.assert_array_equal(from_zarr.read_inputs(times), from_netcdf.read_inputs(times))
    np.testing.assert_array_equal(from_zarr.read_targets(times), from_netcdf.read_targets(times))


def test_multi_file_globs_are_concatenated_over_time(tmp_path, generic):
    coarse = fixtures.coarse_dataset()
    for k, part in enumerate((coarse.isel(time=slice(0, 5)), coarse.isel(time=slice(5, None)))):
        part.to_netcdf(tmp_path / f"coarse_{k}.nc")
    for name, ds in (("fine", fixtures.fine_dataset()), ("static", fixtures.static_dataset())):
        ds.to_netcdf(tmp_path / f"{name}.nc")
    split = PairedFields(fixtures.write_spec(tmp_path, inputs="coarse_*.nc"))
    whole = PairedFields(generic)
    times = whole.times("train")
    np.testing.assert_array_equal(split.read_inputs(times), whole.read_inputs(times))


def test_grib_inputs_read_like_netcdf(tmp_path, generic):
    pytest.importorskip("cfgrib")
    fixtures.write_grib(tmp_path / "coarse.grib", fixtures.coarse_dataset()["t2m"])
    for name, ds in (("fine", fixtures.fine_dataset()), ("static", fixtures.static_dataset())):
        ds.to_netcdf(tmp_path / f"{name}.nc")
    before = sorted(p.name for p in tmp_path.iterdir())
    spec = fixtures.write_spec(tmp_path, inputs="coarse.grib")
    raw = yaml.safe_load(spec.read_text())
    raw["inputs"]["variables"] = ["t2m"]
    spec.write_text(yaml.safe_dump(raw))
    fields = PairedFields(spec)
    times = fields.times("train")
    reference = PairedFields(generic)
    np.testing.assert_allclose(fields.read_inputs(times)[:, 0], reference.read_inputs(times)[:, 0], atol=0.02)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["spec.yaml"])  # no .idx files left


def test_cwa_layout_picks_channels_by_name_and_level(tmp_path):
    spec = fixtures.write_cwa(tmp_path)
    fields = PairedFields(spec)
    assert fields.input_channels == ["temperature_2m", "eastward_wind_10m", "temperature@850"]
    fine = fixtures.fine_dataset()
    times = fields.times("train")
    inputs, targets = fields.read_inputs(times), fields.read_targets(times)
    np.testing.assert_allclose(inputs[:, 0], fine["t2m"].values[: len(times)] + 1.0, rtol=1e-6)
    np.testing.assert_allclose(inputs[:, 2], fine["t2m"].values[: len(times)] - 30, rtol=1e-6)
    np.testing.assert_allclose(targets[:, 1], fine["refl"].values[: len(times)])
    raw = yaml.safe_load(spec.read_text())
    raw["inputs"]["variables"] = ["temperature@500"]
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"cwa.zarr.*'temperature@500' not found in 'era5'; it has .*temperature@850"):
        PairedFields(spec)


def test_truth_and_interpolation_views_for_scoring(generic):
    truth = open_targets(generic, "test")
    assert dict(truth.sizes) == {"time": 3, "y": 16, "x": 24}
    assert truth["t2m"].attrs["units"] == "K" and truth["lat"].shape == (16, 24)
    fields = PairedFields(generic)
    np.testing.assert_array_equal(truth["refl"].values, fields.read_targets(fields.times("test"))[:, 2])
    interp = open_coarse_on_fine(generic, "test")
    assert sorted(interp.data_vars) == ["t2m", "u10"]  # refl is not an input
    np.testing.assert_allclose(interp["t2m"].values, fields.read_inputs(fields.times("test"))[:, 0])


def test_reading_never_modifies_the_users_files(generic):
    folder = generic.parent
    before = tree_digest(folder)
    DownscalingDataset(generic, "train")[0]
    open_coarse_on_fine(generic, "test")["t2m"].values
    assert tree_digest(folder) == before
