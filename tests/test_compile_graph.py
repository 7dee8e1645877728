"""torch.compile sees the denoiser as one graph: whole domain, patches, and stitched patches (tiny network, CPU).

A graph break splits compiled code (and stops a CUDA graph from covering the call); a data-dependent Python
branch is also a host-device synchronisation on a GPU. `torch._dynamo.explain` counts both without compiling.
"""

import pytest
import torch
import torch._dynamo

from corrdiff.diffusion import diffusion_network, EDMPrecond, PatchedDenoiser
from corrdiff.models import presets
from corrdiff.models.embeddings import GridEmbedding

TINY = presets["tiny"]  # 32×32 grid


@pytest.fixture
def denoiser():
    torch.manual_seed(0)
    return EDMPrecond(diffusion_network(TINY), sigma_data=0.5).eval()


def fields(batch: int, size: int):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, TINY.out_channels, size, size, generator=gen)
    condition = torch.randn(batch, TINY.in_channels, size, size, generator=gen)
    return x, torch.tensor([0.3, 5.0])[:batch], condition


def explain(fn, *args):
    torch._dynamo.reset()
    with torch.no_grad():
        return torch._dynamo.explain(fn)(*args)


def test_whole_domain_denoiser_is_one_graph(denoiser):
    result = explain(denoiser, *fields(2, 32))
    assert (result.graph_count, result.graph_break_count) == (1, 0), result.break_reasons


def test_patch_denoiser_with_positions_is_one_graph(denoiser):
    positions = torch.tensor([[0, 0], [16, 8]])
    result = explain(denoiser, *fields(2, 16), positions)
    assert (result.graph_count, result.graph_break_count) == (1, 0), result.break_reasons


def test_stitched_patches_are_one_graph(denoiser):
    patcher = PatchedDenoiser((32, 32), (16, 16), (4, 4))
    x, sigma, condition = fields(2, 32)
    result = explain(lambda x, s, c: patcher(denoiser, x, s, c), x, sigma, condition)
    assert (result.graph_count, result.graph_break_count) == (1, 0), result.break_reasons
    with torch.no_grad():  # and the compiled call gives the eager one's result
        compiled = torch.compile(lambda x, s, c: patcher(denoiser, x, s, c), backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, sigma, condition), patcher(denoiser, x, sigma, condition))


def test_positions_outside_the_grid_are_refused_eager_and_compiled():
    grid = GridEmbedding("sinusoidal", 4, (8, 8))
    inside, outside = torch.tensor([[0, 0], [4, 4]]), torch.tensor([[0, 0], [5, 4]])
    with pytest.raises(ValueError, match=r"outside the \(8, 8\) grid"):
        grid(2, (4, 4), outside)
    compiled = torch.compile(lambda p: grid(2, (4, 4), p), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(inside), grid(2, (4, 4), inside))
    with pytest.raises(RuntimeError, match=r"outside the \(8, 8\) grid"):
        compiled(outside)
