"""Training recipes (`recipe: paper`) and CorrDiff's noise-level default, as read from a run config."""

from pathlib import Path

import pytest
import yaml

from corrdiff.config import ConfigError, DiffusionSection, dump_config, load_config, RECIPES, TrainSection
from corrdiff.training.batches import micro_batching


def write(tmp_path, sections: dict):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": "spec.yaml", **sections}))
    return path


def test_residual_noise_levels_default_to_corrdiffs_lognormal_around_one():
    loss = DiffusionSection().edm_loss()
    assert (loss.P_mean, loss.P_std, loss.sigma_data) == (0.0, 1.2, 0.5)  # ln σ ~ N(0, 1.2²)


def test_paper_recipe_fills_both_training_sections(tmp_path):
    config = load_config(write(tmp_path, {"regression": {"recipe": "paper"}, "diffusion": {"recipe": "paper"}}))
    for section in (config.regression, config.diffusion):
        assert (section.lr, section.betas, section.weight_decay) == (2e-4, (0.9, 0.999), 0.0)
        assert (section.batch_size, section.steps) == (256, 781_250)  # 200 M samples
        assert (section.warmup_samples, section.schedule, section.grad_clip) == (10_000_000, "constant", None)
        assert (section.ema_halflife_samples, section.ema_rampup) == (500_000, 0.05)
        assert section.precision == "auto"  # bf16 autocast on CUDA
    assert (config.diffusion.P_mean, config.diffusion.P_std, config.diffusion.sigma_data) == (0.0, 1.2, 0.5)
    assert not hasattr(config.regression, "P_mean")


def test_explicit_keys_and_overrides_win_over_the_recipe(tmp_path):
    path = write(tmp_path, {"diffusion": {"recipe": "paper", "lr": 1e-4, "grad_clip": 0.5, "P_mean": -1.2}})
    diffusion = load_config(path, ["diffusion.batch_size=64", "diffusion.ema_rampup=null"]).diffusion
    assert (diffusion.lr, diffusion.grad_clip, diffusion.P_mean) == (1e-4, 0.5, -1.2)
    assert (diffusion.batch_size, diffusion.ema_rampup) == (64, None)
    assert diffusion.schedule == "constant" and diffusion.steps == 781_250  # the rest still from the recipe
    recipe_from_the_command_line = load_config(write(tmp_path, {}), ["regression.recipe=paper"]).regression
    assert recipe_from_the_command_line.warmup_samples == 10_000_000


def test_a_warmup_in_steps_replaces_the_recipes_warmup_in_samples(tmp_path):
    regression = load_config(write(tmp_path, {"regression": {"recipe": "paper", "warmup_steps": 100}})).regression
    assert (regression.warmup_steps, regression.warmup_samples) == (100, None)


def test_without_a_recipe_the_defaults_are_unchanged():
    section = TrainSection()
    assert section.recipe is None and section.warmup_samples is None
    assert (section.steps, section.batch_size, section.warmup_steps) == (1000, 16, 50)
    assert (section.schedule, section.grad_clip, section.ema_halflife_samples) == ("cosine", 1.0, 2000.0)


def test_unknown_recipe_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"diffusion\.recipe.*'paper'"):
        load_config(write(tmp_path, {"diffusion": {"recipe": "papr"}}))


def test_resolved_config_of_a_recipe_run_reloads_to_the_same_settings(tmp_path):
    config = load_config(write(tmp_path, {"regression": {"recipe": "paper", "warmup_steps": 7},
                                          "diffusion": {"recipe": "paper"}}))
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(dump_config(config))
    again = load_config(resolved)
    assert again.regression == config.regression and again.diffusion == config.diffusion


def test_paper_batch_is_micro_batch_times_accumulation_times_processes():
    section = TrainSection(recipe="paper", batch_per_device=4)
    assert micro_batching(section, world_size=8) == (4, 8)  # 4 × 8 accumulation rounds × 8 GPUs = 256
    assert micro_batching(section, world_size=1) == (4, 64)
    with pytest.raises(ConfigError, match="batch_per_device 3"):
        micro_batching(TrainSection(recipe="paper", batch_per_device=3), world_size=8)


def test_every_recipe_key_is_a_setting_of_a_training_section():
    for name, values in RECIPES.items():
        assert set(values) <= set(DiffusionSection.model_fields), name


def test_paper_config_file_trains_both_steps_with_the_recipe():
    config = load_config(Path(__file__).parents[1] / "configs" / "paper.yaml")
    assert config.model.preset == "paper"
    for section in (config.regression, config.diffusion):
        assert section.recipe == "paper" and section.warmup_samples == 10_000_000 and section.grad_clip is None
        assert micro_batching(section, world_size=8) == (4, 8)
