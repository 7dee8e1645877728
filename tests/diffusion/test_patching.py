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
    assert (patched - full).abs().max() < 1e-4


class ConvDenoiser(nn.Module):
    """A toy denoiser with spatial extent: a 3×3 convolution of (x, condition) with zero padding, so a pixel
    next to a patch edge sees zeros where the full domain has neighbours (a seam, unless stitching hides it)."""

    def __init__(self, channels, cond_channels):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(channels, channels + cond_channels, 3, 3, generator=gen) * 0.2)

    def forward(self, x, sigma, condition, positions=None):
        mix = torch.nn.functional.conv2d(torch.cat([x, condition], 1), self.weight, padding=1)
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) + mix


def stitch_by_hand(denoiser, x, sigma, condition, offsets, patch):
    """The multi-diffusion definition, patch by patch: the average of every covering patch's denoising."""
    total, count = torch.zeros_like(x), torch.zeros_like(x[:1, :1])
    for r, c in offsets:
        window = (..., slice(r, r + patch[0]), slice(c, c + patch[1]))
        total[window] += denoiser(x[window], sigma, condition[window])
        count[window] += 1
    return total / count


def complete_stencil(domain, offsets, patch):
    """Pixels whose 3×3 neighbourhood lies inside every patch that covers them (or ends at the domain edge)."""
    ok = torch.ones(domain, dtype=torch.bool)
    for r, c in offsets:
        inner = torch.zeros(domain, dtype=torch.bool)
        top, left = (r + 1 if r > 0 else 0), (c + 1 if c > 0 else 0)
        bottom = r + patch[0] - 1 if r + patch[0] < domain[0] else domain[0]
        right = c + patch[1] - 1 if c + patch[1] < domain[1] else domain[1]
        inner[top:bottom, left:right] = True
        covered = torch.zeros(domain, dtype=torch.bool)
        covered[r : r + patch[0], c : c + patch[1]] = True
        ok &= ~covered | inner
    return ok


@pytest.mark.parametrize("overlap", [(4, 6), (8, 12)])
def test_stitching_is_the_average_of_the_covering_patches_and_has_no_seam(overlap):
    domain, patch = (40, 56), (16, 24)
    denoiser = ConvDenoiser(2, 3).eval()
    gen = torch.Generator().manual_seed(1)
    x, condition = torch.randn(2, 2, *domain, generator=gen), torch.randn(2, 3, *domain, generator=gen)
    sigma = torch.tensor([0.7, 3.0])
    patcher = PatchedDenoiser(domain, patch, overlap=overlap, max_batch=7)
    with torch.no_grad():
        stitched = patcher(denoiser, x, sigma, condition)
        by_hand = stitch_by_hand(denoiser, x, sigma, condition, patcher.offsets.tolist(), patch)
        full = denoiser(x, sigma, condition)
    torch.testing.assert_close(stitched, by_hand, rtol=1e-5, atol=1e-5)
    # Where every covering patch sees a pixel's whole stencil, stitched equals the full domain: no seam.
    exact = complete_stencil(domain, patcher.offsets.tolist(), patch)
    assert 0.3 < exact.float().mean() < 1
    torch.testing.assert_close(stitched[..., exact], full[..., exact], rtol=1e-5, atol=1e-5)
    assert (stitched - full)[..., ~exact].abs().max() > 1e-3  # the check above would see a seam


def test_the_condition_is_cut_into_patches_once_per_ensemble():
    domain, patch = (32, 32), (16, 16)
    patcher = PatchedDenoiser(domain, patch, overlap=(4, 4))
    condition = torch.randn(1, 3, *domain)
    seen = []
    denoiser = lambda x, sigma, cond, positions: seen.append(cond) or x
    for _ in range(3):  # three sampler steps, one condition
        patcher(denoiser, torch.zeros(1, 1, *domain), torch.ones(1), condition)
    assert seen[0].data_ptr() == seen[1].data_ptr() == seen[2].data_ptr()
    condition.add_(1.0)  # changed in place: cut again
    patcher(denoiser, torch.zeros(1, 1, *domain), torch.ones(1), condition)
    assert seen[3].data_ptr() != seen[0].data_ptr() and torch.equal(seen[3], seen[0] + 1)


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
