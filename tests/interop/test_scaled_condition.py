"""PhysicsNeMo's `EDMPrecondSR(scale_cond_input=True)`: the condition scaled by c_in(σ) with the noisy image.

Fixture `diffusion_scaled.mdlus` (made by PhysicsNeMo 2.2.2, fixtures/make_physicsnemo_fixtures.py) is such a
denoiser, conditioned on [μ, y], saved in Modulus's tar layout with no `scale_cond_input` in args.json, as the
releases that wrote NVIDIA's published CorrDiff Taiwan denoiser did (PhysicsNeMo then takes its default, True).
Tolerance as for the other peer fixtures: max |corrdiff − PhysicsNeMo| ≤ 2e-5 × std(PhysicsNeMo's output).
"""

import json

import numpy as np
import pytest
import torch

from corrdiff import checkpoint as ckpt
from corrdiff.inference import model_package
from corrdiff.checkpoint import CheckpointMeta
from corrdiff.data.spec import Source
from corrdiff.diffusion import DiffusionCondition, edm_sample, edm_scalings, EDMPrecond, SamplerConfig
from corrdiff.diffusion.multidiffusion import PatchedDenoiser
from corrdiff.errors import CheckpointError
from corrdiff.inference.downscaling import load_models
from corrdiff.inference.inputs import InputRules
from corrdiff.interop import export_physicsnemo, import_physicsnemo, read_mdlus
from corrdiff.interop.convert import convert
from corrdiff.models import UNetConfig
from corrdiff.networks import load_network, network_for
from tests.interop.physicsnemo_fixtures import (expected, grid, imported_run, INPUTS, network, relative_error, stats,
                                                TOLERANCE)
from tests.interop.test_bad_archives import expect_error, rewrite

SAMPLER = SamplerConfig(num_steps=8, sigma_min=0.002, sigma_max=80.0, rho=7.0)


@pytest.fixture(scope="module")
def ref():
    return {k: torch.from_numpy(v) if k in ("y", "noisy", "latents", "regression") else v
            for k, v in expected().items()}


def condition_of(ref, unet):
    """corrdiff's condition [y, μ] for the fixtures' inputs and PhysicsNeMo's regression mean."""
    return DiffusionCondition.from_unet(unet).field(ref["y"], ref["regression"])


def tiny_denoiser(scale_condition: bool) -> EDMPrecond:
    unet = UNetConfig(img_shape=(16, 16), in_channels=3, out_channels=2, model_channels=8, channel_mult=(1, 2),
                      channel_mult_emb=2, num_blocks=1, attn_resolutions=(), dropout=0.0, grid_embedding="learned",
                      grid_channels=2)
    net = network_for(unet, "diffusion", 0.5, scale_condition).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights everywhere: the output layer starts at zero
        for param in net.parameters():
            param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    return net


def test_scaling_the_condition_is_feeding_it_premultiplied_by_c_in():
    """D(x; σ, c) with scale_condition = D(x; σ, c_in(σ)·c) without it, for the same weights."""
    scaled, plain = tiny_denoiser(True), tiny_denoiser(False)
    gen = torch.Generator().manual_seed(1)
    x, condition = torch.randn(3, 2, 16, 16, generator=gen), torch.randn(3, 3, 16, 16, generator=gen)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    c_in = edm_scalings(sigma, 0.5)[2].reshape(-1, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, sigma, condition), plain(x, sigma, c_in * condition))
        assert not torch.allclose(scaled(x, sigma, condition), plain(x, sigma, condition), atol=1e-3)


def test_stitched_patches_scale_each_patch_condition():
    """PatchedDenoiser passes each patch's condition through the denoiser, which scales it (grid unscaled)."""
    scaled, plain = tiny_denoiser(True), tiny_denoiser(False)
    patched = PatchedDenoiser(domain=(16, 16), patch_shape=(8, 8), overlap=(4, 4))
    gen = torch.Generator().manual_seed(2)
    x, condition = torch.randn(2, 2, 16, 16, generator=gen), torch.randn(2, 3, 16, 16, generator=gen)
    sigma = torch.tensor([3.0, 3.0])
    c_in = float(edm_scalings(torch.tensor(3.0), 0.5)[2])
    with torch.no_grad():
        torch.testing.assert_close(patched(scaled, x, sigma, condition), patched(plain, x, sigma, c_in * condition))


def test_imported_denoiser_matches_physicsnemo_at_every_noise_level(ref):
    net, converted = network("diffusion_scaled", "diffusion")
    assert converted.layout.scale_condition and net.scale_condition
    assert converted.archive.container == "tar" and "scale_cond_input" not in converted.archive.args
    condition = condition_of(ref, converted.layout.unet)
    unscaled = network_for(converted.layout.unet, "diffusion", 0.5, scale_condition=False)
    unscaled.load_state_dict(converted.weights)
    for i, sigma in enumerate(ref["sigmas"]):
        sigmas = torch.full((2,), float(sigma))
        assert relative_error(net(ref["noisy"], sigmas, condition), ref["diffusion_scaled"][i]) <= TOLERANCE
        if sigma >= 0.5:  # the fixture tells the two apart: feeding the condition unscaled is far off
            assert relative_error(unscaled(ref["noisy"], sigmas, condition), ref["diffusion_scaled"][i]) > 1e-2


def test_complete_sampler_run_matches(ref):
    """corrdiff's Heun sampler from PhysicsNeMo's latents vs its stochastic_sampler (S_churn = 0), mean-conditioned."""
    net, converted = network("diffusion_scaled", "diffusion")
    mean = ref["regression"][:1].expand(2, -1, -1, -1)  # the sampler was given the first element's mean (mean_hr)
    condition = DiffusionCondition.from_unet(converted.layout.unet).field(ref["y"], mean)
    residual = edm_sample(lambda x, sigma: net(x, sigma, condition), tuple(ref["latents"].shape[1:]), [0, 1], 0,
                          SAMPLER, latents=ref["latents"])
    assert relative_error(residual, ref["sample_residual_scaled"]) <= TOLERANCE


@pytest.mark.parametrize("args, scaled", [({"scale_cond_input": True}, True), ({"scale_cond_input": False}, False)])
def test_scale_cond_input_is_read_from_args(tmp_path, args, scaled):
    path = rewrite(tmp_path, "diffusion_scaled", args=args, container="tar")
    assert convert(path, "diffusion", stats()).layout.scale_condition is scaled


def test_scale_cond_input_outside_edmprecondsr_or_not_a_boolean_is_refused(tmp_path):
    expect_error(rewrite(tmp_path, "diffusion", args={"scale_cond_input": True}),
                 "scale_cond_input is an argument of EDMPrecondSR, not of EDMPrecondSuperResolution")
    expect_error(rewrite(tmp_path, "diffusion_scaled", name="b.mdlus", args={"scale_cond_input": "yes"}),
                 "scale_cond_input='yes' is not true or false")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaled") / "run"
    imported_run(out, "diffusion_scaled")
    return out


def test_import_records_it_and_generation_loads_it(imported, ref):
    diffusion = ckpt.load_model(imported / "diffusion", kind="diffusion")
    assert diffusion.meta.scale_condition is True
    assert json.loads((diffusion.path / ckpt.MODEL_META).read_text())["scale_condition"] is True
    models = load_models(imported / "regression", imported / "diffusion", "cpu")
    assert models.mismatches == [] and models.denoiser.scale_condition
    condition = condition_of(ref, diffusion.meta.unet)
    with torch.no_grad():
        denoised = models.denoiser(ref["noisy"], torch.full((2,), 2.5), condition)
    assert relative_error(denoised, ref["diffusion_scaled"][3]) <= TOLERANCE


def test_model_package_keeps_it(imported, ref, tmp_path):
    regression = ckpt.load_model(imported / "regression")
    diffusion = ckpt.load_model(imported / "diffusion")
    lat, lon = grid()
    rules = InputRules(inputs=Source(paths=[], variables=INPUTS))
    package = model_package.Package(regression, diffusion, rules, lat, lon,
                                    {}, SamplerConfig(), "test")
    loaded = model_package.load(model_package.write(package, tmp_path / "model"))
    assert loaded.diffusion.meta.scale_condition is True
    net = loaded.models("cpu").denoiser
    with torch.no_grad():
        denoised = net(ref["noisy"], torch.full((2,), 80.0), condition_of(ref, diffusion.meta.unet))
    assert relative_error(denoised, ref["diffusion_scaled"][4]) <= TOLERANCE


def test_export_writes_edmprecondsr_and_round_trips(imported, ref, tmp_path):
    files, _ = export_physicsnemo(imported, tmp_path / "export")
    exported = read_mdlus(tmp_path / "export" / "diffusion.mdlus")
    assert exported.class_name == "EDMPrecondSR" and exported.module == "physicsnemo.diffusion.preconditioners.legacy"
    assert exported.args["scale_cond_input"] is True and exported.args["img_channels"] == 2
    assert read_mdlus(tmp_path / "export" / "regression.mdlus").class_name == "CorrDiffRegressionUNet"
    again = import_physicsnemo(tmp_path / "again", stats(), *grid(), regression=files[0], diffusion=files[1])
    diffusion = ckpt.load_model(again.checkpoints["diffusion"])
    assert diffusion.meta.scale_condition is True
    with torch.no_grad():
        denoised = load_network(diffusion)(ref["noisy"], torch.full((2,), 0.5),
                                                condition_of(ref, diffusion.meta.unet))
    assert relative_error(denoised, ref["diffusion_scaled"][2]) <= TOLERANCE


def test_older_checkpoints_load_unscaled_and_regression_cannot_scale(imported):
    text = (ckpt.resolve(imported / "diffusion") / ckpt.MODEL_META).read_text()
    data = json.loads(text)
    del data["scale_condition"]
    data["format"] = ckpt.FORMAT  # as written before the option existed
    assert CheckpointMeta.from_json(json.dumps(data)).scale_condition is False
    with pytest.raises(CheckpointError, match="scale_condition must be true or false"):
        CheckpointMeta.from_json(json.dumps(data | {"scale_condition": "false"}))
    meta = CheckpointMeta.from_json(text)
    with pytest.raises(ValueError, match="diffusion checkpoint only"):
        meta.replace(kind="regression", sigma_data=None)
    assert np.isclose(meta.sigma_data, 0.5)


def test_a_scaled_checkpoint_has_a_format_that_older_readers_refuse(imported):
    """Readers of corrdiff-checkpoint-1 ignore unknown keys: a scaled denoiser must not look like one of theirs."""
    text = (ckpt.resolve(imported / "diffusion") / ckpt.MODEL_META).read_text()
    data = json.loads(text)
    assert data["format"] == ckpt.FORMAT_SCALED != ckpt.FORMAT
    assert json.loads(CheckpointMeta.from_json(text).replace(scale_condition=False).to_json())["format"] == ckpt.FORMAT
    for bad in (data | {"format": ckpt.FORMAT}, data | {"scale_condition": False}):
        with pytest.raises(CheckpointError, match="does not go with scale_condition"):
            CheckpointMeta.from_json(json.dumps(bad))
