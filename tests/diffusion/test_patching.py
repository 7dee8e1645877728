import pytest
import torch
from torch import nn

from corrdiff.diffusion import PatchedDenoiser, SamplerConfig, crop, random_patches, sample_ensemble
from corrdiff.diffusion.patching import patch_offsets


class PointwiseDenoiser(nn.Module):
    """A translation-equivariant toy denoiser: a per-pixel MLP of (x, condition, σ)."""

    def __init__(self, channels, cond_channels):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(16, channels + cond_channels + 1, generator=gen) * 0.3)
        self.w2 = nn.Parameter(torch.randn(channels, 16, generator=gen) * 0.3)

    def forward(self, x, sigma, condition, positions=None):
        s = sigma.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:]).log()
        h = torch.tanh(torch.einsum("oc,bchw->bohw", self.w1, torch.cat([x, condition, s], 1)))
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) + torch.einsum("oc,bchw->bohw", self.w2, h)


def test_patch_offsets_cover_domain():
    starts = patch_offsets(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="exceeds"):
        patch_offsets(16, 32, 0)


def test_patched_sampling_equals_full_domain_without_seams():
    domain, patch = (256, 384), (64, 64)
    denoiser = PointwiseDenoiser(2, 3).eval()
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 2, *domain, generator=gen)
    condition = torch.randn(1, 3, *domain, generator=gen)
    config = SamplerConfig(num_steps=5, S_churn=4.0)
    patcher = PatchedDenoiser(domain, patch, overlap=(16, 16), max_batch=32)
    with torch.no_grad():
        full = sample_ensemble(denoiser, mean, condition, range(2), seed=1, config=config)
        patched = sample_ensemble(denoiser, mean, condition, range(2), seed=1, config=config, patcher=patcher)
    difference = (patched - full).abs()
    assert difference.max() < 1e-4
    # No seam: the error along patch edges is no larger than in patch interiors.
    edges = torch.zeros(domain, dtype=torch.bool)
    for r, c in patcher.offsets.tolist():
        edges[r, c : c + patch[1]] = edges[r + patch[0] - 1, c : c + patch[1]] = True
        edges[r : r + patch[0], c] = edges[r : r + patch[0], c + patch[1] - 1] = True
    assert difference[..., edges].max() <= difference[..., ~edges].max() + 1e-6


def test_patches_of_a_position_dependent_denoiser_see_their_positions():
    domain, patch = (32, 48), (16, 16)
    seen = []

    def denoiser(x, sigma, condition, positions):
        seen.append(positions.clone())
        # Returns the global row index of each pixel: only right if positions are used correctly.
        rows = positions[:, 0, None, None] + torch.arange(x.shape[-2])[None, :, None]
        return rows[:, None].expand_as(x).to(x.dtype)

    patcher = PatchedDenoiser(domain, patch, overlap=(4, 4), max_batch=5)
    out = patcher(denoiser, torch.zeros(2, 1, *domain), torch.ones(2), torch.zeros(2, 1, *domain))
    expected = torch.arange(domain[0], dtype=torch.float32)[:, None].expand(domain)
    torch.testing.assert_close(out, expected.expand(2, 1, *domain))
    assert sum(len(p) for p in seen) == 2 * len(patcher.offsets)


def test_random_patches_crop_all_tensors_alike():
    gen = torch.Generator().manual_seed(0)
    index = torch.arange(4 * 20 * 30, dtype=torch.float32).reshape(4, 1, 20, 30)
    crops, positions = random_patches([index, index * 2], (8, 10), gen)
    assert crops[0].shape == (4, 1, 8, 10)
    torch.testing.assert_close(crops[1], crops[0] * 2)
    for b, (r, c) in enumerate(positions.tolist()):
        assert torch.equal(crops[0][b], index[b, :, r : r + 8, c : c + 10])
    assert torch.equal(crop(index, positions, (8, 10)), crops[0])
