import pytest
import torch

from corrdiff.diffusion import diffusion_network
from corrdiff.models import SongUNet, count_parameters, presets
from corrdiff.models.embeddings import GridEmbedding, sinusoidal_grid

TINY = presets["tiny"]


@pytest.mark.parametrize("shape", [(32, 32), (16, 48), (48, 16), (24, 40)])  # square, non-square, odd multiples of 8
@pytest.mark.parametrize("role", ["regression", "diffusion"])
def test_shapes_and_dtype(shape, role):
    config = TINY.replace(img_shape=shape)
    net = config.build_regression() if role == "regression" else diffusion_network(config)
    x = torch.randn(3, net.in_channels, *shape)
    noise = torch.full((3,), 0.3) if role == "diffusion" else None
    out = net(x, noise)
    assert out.shape == (3, config.out_channels, *shape)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_unsupported_size_names_size_and_divisor():
    config = TINY.replace(channel_mult=(1, 2, 2))  # divisor 4
    with pytest.raises(ValueError, match=r"30×32.*multiples of 4"):
        config.replace(img_shape=(30, 32)).build_regression()
    net = config.replace(img_shape=(32, 32)).build_regression()
    with pytest.raises(ValueError, match=r"32×18.*multiples of 4"):
        net(torch.randn(1, net.in_channels, 32, 18), positions=torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("width", [24, 48, 40])
def test_widths_that_are_not_multiples_of_32_build(width):
    net = TINY.replace(model_channels=width, channel_mult=(1, 2, 3)).build_regression()
    for module in net.modules():
        if isinstance(module, torch.nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
    assert net(torch.randn(1, net.in_channels, 32, 32)).shape == (1, TINY.out_channels, 32, 32)


def test_regression_net_has_no_noise_input_and_diffusion_net_needs_one():
    reg, dif = TINY.build_regression(), diffusion_network(TINY)
    assert not any("affine" in name or "map_layer" in name for name, _ in reg.named_parameters())
    with pytest.raises(ValueError, match="noise_labels"):
        dif(torch.randn(1, dif.in_channels, 32, 32))


def test_noise_embedding_changes_output():
    net = diffusion_network(TINY)
    # Zero-initialised output layers would hide the dependence: perturb all weights first.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(1, net.in_channels, 32, 32)
    assert not torch.allclose(net(x, torch.tensor([-1.0])), net(x, torch.tensor([1.0])))


def test_sinusoidal_grid_codes_every_pixel_uniquely_and_is_bounded():
    grid = sinusoidal_grid(8, (12, 20))
    assert grid.shape == (8, 12, 20)
    assert grid.abs().max() <= 1.0
    codes = grid.reshape(8, -1).T.round(decimals=5)
    assert len({tuple(c.tolist()) for c in codes}) == 12 * 20


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_grid_embedding_patches_are_crops_of_the_global_grid(kind):
    emb = GridEmbedding(kind, 4, (16, 24))
    full = emb(1, (16, 24))[0]
    positions = torch.tensor([[0, 0], [8, 16], [3, 5]])
    patches = emb(3, (8, 8), positions)
    for patch, (r, c) in zip(patches, positions.tolist()):
        assert torch.equal(patch, full[:, r : r + 8, c : c + 8])
    with pytest.raises(ValueError, match="outside"):
        emb(1, (8, 8), torch.tensor([[9, 0]]))


def test_learned_grid_embedding_is_trainable():
    net = TINY.replace(grid_embedding="learned").build_regression()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    assert "grid.grid" in names


def test_attention_placed_at_requested_resolution():
    config = TINY.replace(img_shape=(32, 32), channel_mult=(1, 2, 2), attn_resolutions=(8,))
    net = config.build_regression()
    attn_blocks = [b for b in list(net.encoder) + list(net.decoder) if b.attn is not None]
    # num_blocks=1 encoder block at 8×8, the bottom "in0" block, and the last decoder block at 8×8.
    assert len(attn_blocks) == 3


def test_paper_preset_matches_reference_size():
    config = presets["paper"]
    assert config.img_shape == (448, 448) and config.in_channels == 12 and config.out_channels == 4
    # Build on the meta device: counting parameters needs no memory or init time.
    with torch.device("meta"):
        diffusion = diffusion_network(config)
    # PhysicsNeMo's SongUNetPosEmbd in this configuration has exactly this many (benchmarks/bench_unet.py).
    assert count_parameters(diffusion) == 80_002_692
    assert diffusion.input_conv.in_channels == 12 + 4 + 4  # condition + noisy residual + grid channels
    # 5 levels of 4 blocks, a downsampling block between levels; attention only on the 28×28 level
    # (448 / 2**4), as in EDM's SongUNet: its 4 encoder blocks, the first bottom block and the level's last
    # decoder block.
    blocks = list(diffusion.encoder) + list(diffusion.decoder)
    assert (len(diffusion.encoder), len(diffusion.decoder)) == (24, 31)
    assert sum(b.down for b in diffusion.encoder) == 4 and sum(b.up for b in diffusion.decoder) == 4
    assert sum(b.attn is not None for b in blocks) == 6
    assert diffusion.decoder[0].attn is not None and diffusion.decoder[6].attn is not None
    assert [b.out_channels for b in diffusion.encoder if b.down] == [128, 256, 256, 256]


def test_dropout_acts_in_training_only_and_in_place_updates_keep_gradients():
    config = presets["tiny"].replace(dropout=0.5)
    torch.manual_seed(0)
    net = config.build_regression()
    with torch.no_grad():  # make the zero-initialised output layers matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, config.in_channels, *config.img_shape, requires_grad=True)
    net.eval()
    assert torch.equal(net(x), net(x))  # no dropout at evaluation
    net.train()
    assert not torch.allclose(net(x), net(x))  # a fresh mask each call
    # The blocks update convolution outputs in place; autograd must still give the true gradient.
    net.eval()
    net(x).square().sum().backward()
    direction = torch.randn_like(x)
    eps = 1e-3
    with torch.no_grad():
        numeric = (net(x + eps * direction).square().sum() - net(x - eps * direction).square().sum()) / (2 * eps)
    assert torch.allclose((x.grad * direction).sum(), numeric, rtol=2e-2)


def test_presets_command_prints_the_networks_parameter_counts():
    from typer.testing import CliRunner

    from corrdiff.cli import app

    result = CliRunner().invoke(app, ["presets", "tiny"])
    assert result.exit_code == 0, result.output
    assert f"regression UNet: {count_parameters(TINY.build_regression()):,} parameters" in result.output
    assert f"diffusion UNet:  {count_parameters(diffusion_network(TINY)):,} parameters" in result.output
    unknown = CliRunner().invoke(app, ["presets", "huge"])
    assert unknown.exit_code == 2 and "no preset 'huge'; choose from ['paper', 'tiny']" in unknown.output
