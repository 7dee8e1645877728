"""The fused GroupNorm+SiLU (fast path `fused_norm`) computes the plain path's function, in both layouts and precisions.

Tolerances: float32 against float32, a few units of float32 round-off (the two paths sum the statistics in
another order); under bf16 autocast, one bf16 rounding of the output (2**-8 relative) against the float32
result on the same bf16 input, since the fused path keeps its statistics in float32.
"""

import pytest
import torch
import torch._dynamo

from corrdiff.config import FastPathSection
from corrdiff.diffusion import diffusion_network, EDMPrecond
from corrdiff.models import presets
from corrdiff.models.layers import GroupNormSiLU, set_fused_norm
from corrdiff.fast_path import FastPath, prepare_denoiser

TINY = presets["tiny"]  # 32×32 grid
FP32_ATOL = 2e-5  # outputs are O(1)-O(10): a few float32 ulps
BF16_RTOL = 2**-8  # one bf16 rounding
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def layer(channels=64, seed=0) -> GroupNormSiLU:
    """A GroupNormSiLU with non-trivial scale and shift (the defaults, 1 and 0, would hide a swapped affine)."""
    gen = torch.Generator().manual_seed(seed)
    norm = GroupNormSiLU(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=gen))
        norm.bias.copy_(torch.randn(channels, generator=gen))
    return norm


def activations(layout, channels=64, seed=1) -> torch.Tensor:
    """(2, channels, 8, 8), with per-channel offsets larger than the spread (where one-pass statistics go wrong)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 8, 8, generator=gen) + 20 * torch.randn(1, channels, 1, 1, generator=gen)
    return x.contiguous(memory_format=LAYOUTS[layout])


def run(norm: GroupNormSiLU, x: torch.Tensor, fused: bool, bf16: bool = False, call=None) -> torch.Tensor:
    norm.fused = fused
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return (norm if call is None else call)(x)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_equals_plain_in_float32(layout):
    norm, x = layer(), activations(layout)
    plain, fused = run(norm, x, False), run(norm, x, True)
    torch.testing.assert_close(fused, plain, rtol=0, atol=FP32_ATOL)
    assert fused.dtype == torch.float32 and fused.is_contiguous(memory_format=LAYOUTS[layout])  # no transpose


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_under_bf16_autocast_is_float32_math_rounded_once(layout):
    norm, x = layer(), activations(layout).bfloat16()
    exact = run(norm, x.float(), False)  # float32 on the very same (bf16-representable) input
    fused = run(norm, x, True, bf16=True)
    assert fused.dtype == torch.bfloat16  # bf16 out: no float32 copy handed to the next convolution
    assert fused.is_contiguous(memory_format=LAYOUTS[layout])
    torch.testing.assert_close(fused.float(), exact, rtol=BF16_RTOL, atol=1e-6)


def test_fused_gradients_equal_plain_gradients():
    norm, x = layer(), activations("channels_last").requires_grad_()
    grads = []
    for fused in (False, True):
        norm.fused = fused
        norm.zero_grad()
        x.grad = None
        (norm(x) * torch.linspace(-1, 1, x.numel()).reshape(x.shape)).sum().backward()
        grads.append((x.grad.clone(), norm.weight.grad.clone(), norm.bias.grad.clone()))
    for plain, fused in zip(*grads):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)


def tiny_denoiser() -> EDMPrecond:
    torch.manual_seed(0)
    net = EDMPrecond(diffusion_network(TINY), sigma_data=0.5).eval()
    with torch.no_grad():  # random affine parameters everywhere, so every norm's scale and shift matter
        for module in net.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.normal_(1, 0.5), module.bias.normal_(0, 0.5)
    return net


def denoiser_inputs():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, TINY.out_channels, 32, 32, generator=gen)
    condition = torch.randn(2, TINY.in_channels, 32, 32, generator=gen)
    return x, torch.tensor([0.3, 5.0]), condition


@torch.no_grad()
def test_network_fused_matches_plain_and_keeps_its_state_dict():
    net = tiny_denoiser()
    keys = {k: v.shape for k, v in net.state_dict().items()}
    plain = net(*denoiser_inputs())
    set_fused_norm(net)
    switched = [m for m in net.modules() if isinstance(m, GroupNormSiLU)]
    assert switched and all(m.fused for m in switched)
    # Every block's two norms and the output norm; attention keeps its own (no SiLU after it).
    assert len(switched) == 2 * sum(1 for m in net.modules() if type(m).__name__ == "UNetBlock") + 1
    fused = net(*denoiser_inputs())
    assert {k: v.shape for k, v in net.state_dict().items()} == keys  # checkpoints and imports are unaffected
    assert (fused - plain).abs().max() <= 1e-4 * plain.abs().max()
    set_fused_norm(net, False)
    assert torch.equal(net(*denoiser_inputs()), plain)  # the plain path is today's ops, bit for bit


def test_denoiser_with_fused_norm_is_one_graph():
    net = set_fused_norm(tiny_denoiser())
    torch._dynamo.reset()
    with torch.no_grad():
        result = torch._dynamo.explain(net)(*denoiser_inputs())
    assert (result.graph_count, result.graph_break_count) == (1, 0), result.break_reasons


def compiled_or_skip(module):
    """`torch.compile(module)` (inductor) after one probe call, or skip naming why it cannot compile here."""
    torch._dynamo.reset()
    compiled = torch.compile(module)
    try:
        compiled(torch.zeros(1, module.num_channels, 2, 2, device=module.weight.device))
    except Exception as err:  # a missing C++ compiler surfaces as several exception types
        pytest.skip(f"torch.compile does not work on this machine: {type(err).__name__}: {str(err)[:200]}")
    return compiled


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bf16", [False, True])
def test_compiled_fused_equals_eager(layout, bf16):
    norm, x = layer(), activations(layout)
    x = x.bfloat16() if bf16 else x
    norm.fused = True
    compiled = compiled_or_skip(norm)
    eager, got = run(norm, x, True, bf16), run(norm, x, True, bf16, call=compiled)
    assert got.dtype == eager.dtype and got.is_contiguous(memory_format=LAYOUTS[layout])
    torch.testing.assert_close(got.float(), eager.float(), rtol=BF16_RTOL if bf16 else 0,
                               atol=1e-6 if bf16 else FP32_ATOL)
    torch.testing.assert_close(got.float(), run(norm, x.float(), False), rtol=2 * BF16_RTOL if bf16 else 0,
                               atol=1e-6 if bf16 else FP32_ATOL)


def test_compiled_fused_stores_no_float32_copy_of_bf16_activations():
    from torch._inductor.utils import run_and_get_code

    norm, x = layer(), activations("channels_last").bfloat16()
    norm.fused = True
    compiled = compiled_or_skip(norm)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, (code, *_) = run_and_get_code(compiled, x)
    assert out.dtype == torch.bfloat16
    buffers = [line for line in code.splitlines() if "= empty_strided" in line]
    full_size = f"({', '.join(map(str, x.shape))})"
    assert buffers and not [b for b in buffers if full_size in b and "float32" in b], buffers
    assert [b for b in buffers if full_size in b] == [b for b in buffers if "bfloat16" in b]  # the output only


def test_fast_path_setting():
    assert FastPath.resolve("cpu").fused_norm is False
    assert FastPath.resolve("cuda").fused_norm is False  # auto: off until the GPU check measures it
    assert FastPath.resolve("cuda", compile=True).fused_norm is False
    assert FastPath.resolve("cpu", fused_norm=True).fused_norm is True
    assert FastPathSection(fused_norm=True).fast_path("cpu").fused_norm is True
    assert FastPathSection().fast_path("cpu") == FastPath(channels_last=True)
    net = tiny_denoiser()
    prepare_denoiser(net, FastPath(fused_norm=True))
    assert all(m.fused for m in net.modules() if isinstance(m, GroupNormSiLU))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_compiled_fused_matches_plain_under_bf16_autocast(layout):
    """On CUDA, autocast runs torch's GroupNorm in float32: the fused bf16 result is that, rounded once."""
    norm, x = layer().cuda(), activations(layout).cuda().bfloat16()
    norm.fused = True
    compiled = compiled_or_skip(norm)
    fused = run(norm, x, True, call=compiled)  # its output dtype is x's, with or without autocast
    norm.fused = False
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected = norm(x)
    assert fused.dtype == torch.bfloat16 and expected.dtype == torch.float32
    torch.testing.assert_close(fused.float(), expected, rtol=2 * BF16_RTOL, atol=1e-5)
