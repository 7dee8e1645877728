"""The random-forest baseline: one forest per target channel, sinusoidal position features, progress for free."""

from types import SimpleNamespace

import numpy as np
import torch
import xarray as xr
from sklearn.ensemble import RandomForestRegressor

from corrdiff.evaluation.baselines import fit_random_forest, pixel_features, position_features, RF_TREES
from corrdiff.models.embeddings import sinusoidal_grid
from tests.evaluation.test_cli import invoke, spec_case  # noqa: F401  (spec_case: a fixture)


def test_pixel_features_are_the_inputs_then_sin_cos_of_the_position():
    inputs = np.random.default_rng(0).normal(size=(3, 5, 7)).astype(np.float32)
    features = pixel_features(inputs)
    assert features.shape == (35, 3 + 4)
    np.testing.assert_array_equal(features[:, :3], inputs.reshape(3, -1).T)
    position = position_features((5, 7))
    np.testing.assert_allclose(position, sinusoidal_grid(4, (5, 7)).numpy())
    row, col = 2, 3  # sin(2π·row/H), cos(2π·row/H), sin(2π·col/W), cos(2π·col/W)
    expected = [np.sin(2 * np.pi * row / 5), np.cos(2 * np.pi * row / 5), np.sin(2 * np.pi * col / 7),
                np.cos(2 * np.pi * col / 7)]
    np.testing.assert_allclose(features[row * 7 + col, 3:], expected, atol=1e-6)


def test_growing_a_forest_in_steps_gives_the_forest_of_one_fit():
    """Progress comes from warm-start steps; the trees must be those one fit would grow."""
    rng = np.random.default_rng(0)
    features, target = rng.normal(size=(200, 4)), rng.normal(size=200)
    whole = RandomForestRegressor(n_estimators=6, min_samples_leaf=5, random_state=7).fit(features, target)
    stepped = RandomForestRegressor(n_estimators=0, min_samples_leaf=5, random_state=7, warm_start=True)
    for trees in (2, 4, 6):
        stepped.set_params(n_estimators=trees).fit(features, target)
    np.testing.assert_array_equal(whole.predict(features), stepped.predict(features))


class TinyDataset:
    """Two channels of targets: c0 = input 0, c1 = −input 1, on a 6×6 grid (a DownscalingDataset's interface)."""

    def __init__(self, times=4):
        rng = np.random.default_rng(1)
        self.inputs = rng.normal(size=(times, 2, 6, 6)).astype(np.float32)

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        inputs = torch.from_numpy(self.inputs[index])
        return SimpleNamespace(input=inputs, target=torch.stack([inputs[0], -inputs[1]]))


def test_one_forest_per_target_channel_with_100_trees_by_default():
    forests = fit_random_forest(TinyDataset(), samples=120, trees=3, seed=0)
    assert len(forests) == 2 and all(f.n_estimators == 3 for f in forests)
    assert all(f.n_features_in_ == 2 + 4 for f in forests)
    assert forests[0].random_state != forests[1].random_state  # each forest its own seed
    assert RF_TREES == 100


def test_rf_command_writes_the_forest_settings(spec_case, tmp_path):  # noqa: F811
    _, spec, _ = spec_case
    out = tmp_path / "rf.nc"
    result = invoke("baseline", "rf", spec, "--out", out, "--samples", 300, "--trees", 3, "-q")
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        assert ds.attrs["baseline"] == "rf" and ds.attrs["rf_trees"] == 3
        assert "one forest per target channel" in ds.attrs["title"] and "sin and cos" in ds.attrs["rf_features"]
        assert np.isfinite(ds["refl"].values).all()
