import dataclasses
from pathlib import Path

import pytest

from corrdiff.config import ConfigError, load_config

EXAMPLE = Path(__file__).parents[1] / "configs" / "example.yaml"


def test_documented_example_config_is_valid_and_complete():
    config = load_config(EXAMPLE)
    assert config.model.preset == "paper" and config.regression.lr == 2.0e-4
    assert config.sampler.num_steps == 18 and config.generate.members == 8
    assert config.data.endswith("data/spec.yaml") and Path(config.data).is_absolute()
    text = EXAMPLE.read_text()
    # Every field of every section appears in the documented example (shared keys once).
    for section in ("model", "regression", "diffusion", "sampler", "generate"):
        value = getattr(config, section)
        names = [f.name for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else type(value).model_fields
        for name in names:
            assert f"{name}:" in text, f"{section}.{name} undocumented"


def test_unknown_key_and_wrong_type_name_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: spec.yaml\nregression:\n  lr: fast\n  stpes: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "regression.lr" in str(err.value) and "regression.stpes" in str(err.value) and str(path) in str(err.value)


def test_overrides_apply_before_validation(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: spec.yaml\n")
    config = load_config(path, ["regression.lr=1e-3", "model.channel_mult=[1, 2]", "generate.patch_shape=[32, 32]"])
    assert config.regression.lr == 1e-3 and config.model.channel_mult == (1, 2)
    assert config.generate.patch_shape == (32, 32)
    with pytest.raises(ConfigError, match="regression.steps"):
        load_config(path, ["regression.steps=-1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["regression.lr"])


def test_missing_file_and_data_key(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "run.yaml"
    path.write_text("run_dir: x\n")
    with pytest.raises(ConfigError, match="data"):
        load_config(path)


def test_sampler_section_is_the_sampler_config_and_checks_its_values(tmp_path):
    from corrdiff.diffusion import SamplerConfig

    path = tmp_path / "run.yaml"
    path.write_text("data: spec.yaml\nsampler:\n  num_steps: 4\n  S_churn: 2\n")
    assert load_config(path).sampler == SamplerConfig(num_steps=4, S_churn=2.0)
    for bad, message in (("num_steps: 0", "num_steps must be at least 1"), ("stpes: 3", "sampler.stpes"),
                         ("arithmetic: nvidia", r"sampler: .*arithmetic must be one of \['edm', 'physicsnemo'\]")):
        path.write_text(f"data: spec.yaml\nsampler:\n  {bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_model_section_overrides_any_architecture_field_of_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: spec.yaml\nmodel:\n  preset: paper\n  dropout: 0.2\n  channel_mult: [1, 2]\n")
    unet = load_config(path).model.unet_config((64, 64), 5, 3)
    assert unet.dropout == 0.2 and unet.channel_mult == (1, 2) and unet.model_channels == 128
    assert (unet.img_shape, unet.in_channels, unet.out_channels) == ((64, 64), 5, 3)
    path.write_text("data: spec.yaml\nmodel:\n  in_channels: 3\n")  # the data gives the problem shape
    with pytest.raises(ConfigError, match="model.in_channels"):
        load_config(path)
