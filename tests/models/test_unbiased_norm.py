"""GroupNorm with PhysicsNeMo's eval-mode variance (`sampler.arithmetic: physicsnemo`): its formula in eval mode,
torch's in training mode, the same state dict, and a fast-path denoiser that forgets what it compiled."""

import torch

from corrdiff.diffusion import diffusion_network, EDMPrecond
from corrdiff.diffusion.sampler import use_arithmetic
from corrdiff.models import presets
from corrdiff.models.layers import group_norm, GroupNorm, GroupNormSiLU, set_unbiased_norm
from corrdiff.fast_path import FastDenoiser, FastPath


def physicsnemo_eval(x: torch.Tensor, norm: GroupNorm) -> torch.Tensor:
    """PhysicsNeMo 2.2.2's GroupNorm.forward in eval mode, written out: x.var() is the unbiased variance."""
    grouped = x.reshape(x.shape[0], norm.num_groups, -1)
    mean, var = grouped.mean(-1, keepdim=True), grouped.var(-1, keepdim=True)
    normed = ((grouped - mean) * (var + norm.eps).rsqrt()).reshape(x.shape)
    return normed * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


def test_unbiased_in_eval_mode_only_with_the_same_parameters():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 5, generator=gen) + 4 * torch.randn(1, 16, 1, 1, generator=gen)
    norm, pre_activation = group_norm(16), GroupNormSiLU(16)
    with torch.no_grad():
        for layer in (norm, pre_activation):
            layer.weight.copy_(torch.randn(16, generator=gen))
            layer.bias.copy_(torch.randn(16, generator=gen))
    assert list(norm.state_dict()) == ["weight", "bias"] == list(pre_activation.state_dict())
    assert set_unbiased_norm(norm) and set_unbiased_norm(pre_activation) and not set_unbiased_norm(norm)
    with torch.no_grad():
        torch.testing.assert_close(norm.eval()(x), physicsnemo_eval(x, norm), rtol=0, atol=1e-5)
        expected = torch.nn.functional.silu(physicsnemo_eval(x, pre_activation))
        for fused in (False, True):
            pre_activation.fused = fused
            torch.testing.assert_close(pre_activation.eval()(x), expected, rtol=0, atol=1e-5)
        biased = torch.nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(norm.train()(x), biased, rtol=0, atol=0)  # training mode: torch's, as PhysicsNeMo
        assert (norm.eval()(x) - biased).abs().max() > 1e-2  # 8 channels × 15 pixels a group: a 1/120 difference


def test_switching_arithmetic_makes_a_fast_denoiser_forget_its_graphs():
    denoiser = EDMPrecond(diffusion_network(presets["tiny"]), sigma_data=0.5).eval()
    fast = FastDenoiser(denoiser, FastPath(channels_last=True, cuda_graphs=True))
    fast.graphs[("shape",)] = object()  # as if a CUDA graph had been captured with EDM's GroupNorm
    use_arithmetic("edm", fast)
    assert fast.graphs  # nothing changed: kept
    use_arithmetic("physicsnemo", fast)
    assert not fast.graphs and all(m.unbiased for m in denoiser.modules() if isinstance(m, GroupNorm))
