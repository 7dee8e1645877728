"""The fast path gives the plain path's results: each switch alone, on CPU, with stated tolerances.

float32 switches (channels_last, compile) only reorder arithmetic: outputs agree to 1e-5 relative.
bf16 autocast rounds matrix-product inputs to 8 mantissa bits: the network output agrees to 3e-2 relative
(L2), and so does the denoiser output and a whole sampled ensemble. CUDA-only switches are tested when a GPU is present.
"""

import warnings

import pytest
import torch

from corrdiff.diffusion import diffusion_network, EDMPrecond, SamplerConfig, sample_ensemble
from corrdiff.models import presets
from corrdiff.fast_path import (CHANNELS_LAST_AUTO, CompiledOrEager, configure_backends, FastDenoiser, FastPath,
                           prepare_denoiser)

TINY = presets["tiny"]
FP32_RTOL = 1e-5
BF16_RTOL = 3e-2


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return ((result - reference).norm() / reference.norm()).item()


def perturbed_denoiser(seed: int = 0) -> EDMPrecond:
    """A tiny denoiser whose near-zero output layers are perturbed, so the network's output matters."""
    torch.manual_seed(seed)
    denoiser = EDMPrecond(diffusion_network(TINY), sigma_data=0.5)
    with torch.no_grad():
        for p in denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return denoiser.eval()


def inputs(batch: int = 2, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, TINY.out_channels, *TINY.img_shape, generator=gen)
    condition = torch.randn(batch, TINY.in_channels, *TINY.img_shape, generator=gen)
    sigma = torch.tensor([0.3, 5.0])[:batch]
    return x, sigma, condition


def network_output(denoiser, x, sigma, condition) -> torch.Tensor:
    """F itself, recovered from D = c_skip·x + c_out·F, so the comparison is not dominated by c_skip·x."""
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = 0.25 / (s**2 + 0.25)
    c_out = s * 0.5 / (s**2 + 0.25).sqrt()
    return (denoiser(x, sigma, condition) - c_skip * x) / c_out


@torch.no_grad()
def test_channels_last_matches_plain_forward():
    plain = perturbed_denoiser()
    fast = prepare_denoiser(perturbed_denoiser(), FastPath(channels_last=True))
    assert isinstance(fast, FastDenoiser)
    assert fast.denoiser.net.input_conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, sigma, condition = inputs()
    assert relative_error(network_output(fast, x, sigma, condition), network_output(plain, x, sigma, condition)) < FP32_RTOL


def test_channels_last_matches_plain_gradients():
    plain, fast = perturbed_denoiser().train(), perturbed_denoiser().train()
    fast.to(memory_format=torch.channels_last)
    x, sigma, condition = inputs()
    for net in (plain, fast):
        torch.manual_seed(3)  # same dropout masks (tiny has dropout 0, but the loss path must not depend on it)
        net(x, sigma, condition).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert relative_error(q.grad, p.grad) < 1e-4 or p.grad.norm() < 1e-12, name


@torch.no_grad()
def test_bf16_autocast_matches_plain_within_bf16_tolerance():
    plain = perturbed_denoiser()
    fast = prepare_denoiser(perturbed_denoiser(), FastPath(bf16=True))
    x, sigma, condition = inputs()
    out = fast(x, sigma, condition)
    assert out.dtype == torch.float32  # the denoiser's boundary stays float32
    error = relative_error(network_output(fast, x, sigma, condition), network_output(plain, x, sigma, condition))
    assert 0 < error < BF16_RTOL  # nonzero: autocast really ran in bf16
    assert relative_error(out, plain(x, sigma, condition)) < BF16_RTOL


@torch.no_grad()
def test_sampler_on_fast_path_matches_plain():
    config = SamplerConfig(num_steps=4)
    mean = torch.zeros(1, TINY.out_channels, *TINY.img_shape)
    _, _, condition = inputs(batch=1)
    plain = sample_ensemble(perturbed_denoiser(), mean, condition, [0, 1, 2], seed=5, config=config)
    fast = sample_ensemble(prepare_denoiser(perturbed_denoiser(), FastPath(channels_last=True)), mean, condition,
                           [0, 1, 2], seed=5, config=config)
    assert relative_error(fast, plain) < 1e-4
    bf16 = sample_ensemble(prepare_denoiser(perturbed_denoiser(), FastPath(bf16=True)), mean, condition,
                           [0, 1, 2], seed=5, config=config)
    assert relative_error(bf16, plain) < BF16_RTOL


def test_plain_path_is_the_denoiser_itself():
    denoiser = perturbed_denoiser()
    assert prepare_denoiser(denoiser, None) is denoiser
    assert prepare_denoiser(denoiser, FastPath()) is denoiser


def test_compile_failure_at_construction_falls_back(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    denoiser = perturbed_denoiser()
    with pytest.warns(UserWarning, match="no compiler here"):
        wrapped = CompiledOrEager(denoiser)
    x, sigma, condition = inputs()
    with torch.no_grad():
        assert torch.equal(wrapped(x, sigma, condition), denoiser(x, sigma, condition))


def test_compile_failure_at_first_call_falls_back_and_stays_eager(monkeypatch):
    calls = []

    def lazy_broken_compile(module, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            raise RuntimeError("backend compiler failed")

        return compiled

    monkeypatch.setattr(torch, "compile", lazy_broken_compile)
    denoiser = perturbed_denoiser()
    fast = prepare_denoiser(denoiser, FastPath(compile=True))
    x, sigma, condition = inputs()
    with torch.no_grad(), pytest.warns(UserWarning, match="backend compiler failed"):
        first = fast(x, sigma, condition)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second attempt
        second = fast(x, sigma, condition)
        expected = denoiser(x, sigma, condition)
    assert len(calls) == 1
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_out_of_memory_is_not_mistaken_for_a_missing_compiler(monkeypatch):
    def oom_compile(module, **kwargs):
        def compiled(*args, **kw):
            raise torch.OutOfMemoryError("out of memory")

        return compiled

    monkeypatch.setattr(torch, "compile", oom_compile)
    wrapped = CompiledOrEager(perturbed_denoiser())
    with pytest.raises(torch.OutOfMemoryError):
        wrapped(*inputs())


@torch.no_grad()
def test_dynamo_traces_the_denoiser_without_graph_breaks():
    """fullgraph=True fails on any graph break: the whole denoiser is one graph (what CUDA graphs need too)."""
    denoiser = perturbed_denoiser()
    compiled = torch.compile(denoiser, backend="eager", fullgraph=True)
    x, sigma, condition = inputs()
    assert relative_error(compiled(x, sigma, condition), denoiser(x, sigma, condition)) < FP32_RTOL


def test_resolve_auto_switches_by_device():
    assert FastPath.resolve("cpu") == FastPath(channels_last=True)
    assert FastPath.resolve("cpu", channels_last=False) == FastPath()
    assert FastPath.resolve("cuda") == FastPath(bf16=True, channels_last=True, cuda_graphs=True)
    assert FastPath.resolve("cpu", precision="bf16", channels_last=True, compile=True) == FastPath(
        bf16=True, channels_last=True, compile=True)
    with pytest.warns(UserWarning, match="cuda_graphs needs a CUDA device"):
        assert FastPath.resolve("cpu", cuda_graphs=True).cuda_graphs is False
    with pytest.raises(ValueError, match="precision"):
        FastPath.resolve("cpu", precision="fp16")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@torch.no_grad()
def test_cuda_graphs_match_eager_and_sampler_makes_no_syncs():
    device = torch.device("cuda")
    denoiser = perturbed_denoiser().to(device)
    config = SamplerConfig(num_steps=4)
    mean = torch.zeros(1, TINY.out_channels, *TINY.img_shape, device=device)
    condition = inputs(batch=1)[2].to(device)
    plain = sample_ensemble(denoiser, mean, condition, [0, 1], seed=5, config=config)
    graphed = prepare_denoiser(denoiser, FastPath(cuda_graphs=True))
    sample_ensemble(graphed, mean, condition, [0, 1], seed=5, config=config)  # captures
    torch.cuda.set_sync_debug_mode("error")
    try:
        replayed = sample_ensemble(graphed, mean, condition, [0, 1], seed=5, config=config)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(graphed.graphs) == 1
    assert relative_error(replayed, plain) < 1e-4


def test_an_error_of_the_call_itself_is_raised_not_taken_for_the_compiler(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # "compiled" code that is the module
    wrapped = CompiledOrEager(perturbed_denoiser())
    x, sigma, condition = inputs()
    with pytest.raises(ValueError, match="input channels"):  # wrong channel count: eager fails the same way
        wrapped(x, sigma, condition[:, :1])
    assert not wrapped.failed and wrapped.compiled is not None  # no fallback for the call's own error
    with torch.no_grad():
        wrapped(x, sigma, condition)
    assert wrapped.ran_compiled and wrapped.compiled_calls == 1


def test_fallback_records_why_and_that_it_did_not_run_compiled(monkeypatch):
    def lazy_broken_compile(module, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("inductor: no C++ compiler\nlong traceback")
        return compiled

    monkeypatch.setattr(torch, "compile", lazy_broken_compile)
    wrapped = CompiledOrEager(perturbed_denoiser())
    with torch.no_grad(), pytest.warns(UserWarning, match="no C.. compiler"):
        wrapped(*inputs())
    assert wrapped.reason == "RuntimeError: inductor: no C++ compiler" and wrapped.ran_compiled is False


def test_errors_during_cuda_graph_capture_are_never_swallowed(monkeypatch):
    eager_calls = []

    def lazy_broken_compile(module, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("operation not permitted when stream is capturing")
        return compiled

    monkeypatch.setattr(torch, "compile", lazy_broken_compile)
    monkeypatch.setattr("corrdiff.fast_path._capturing", lambda: True)
    denoiser = perturbed_denoiser()
    denoiser.register_forward_hook(lambda *a: eager_calls.append(1))
    wrapped = CompiledOrEager(denoiser)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(RuntimeError, match="stream is capturing"):
            wrapped(*inputs())
    assert not eager_calls and not wrapped.failed


@torch.no_grad()
def test_compiled_for_real_reports_it_and_forwards_attributes():
    denoiser = perturbed_denoiser()
    wrapped = CompiledOrEager(denoiser, backend="eager")  # dynamo traces; no C++ compiler needed
    x, sigma, condition = inputs()
    assert relative_error(wrapped(x, sigma, condition), denoiser(x, sigma, condition)) < FP32_RTOL
    assert wrapped.ran_compiled and wrapped.reason is None
    assert wrapped.sigma_data == denoiser.sigma_data  # attributes of the wrapped module (a sampler may ask)


def test_configure_backends_sets_cuda_math_explicitly_and_leaves_cpu_alone():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        assert configure_backends("cpu", allow_tf32=True) == {}
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.benchmark) == saved
        for allow in (True, False):
            assert configure_backends("cuda", allow_tf32=allow) == {"allow_tf32": allow, "cudnn_benchmark": True}
            assert torch.backends.cudnn.allow_tf32 is allow and torch.backends.cuda.matmul.allow_tf32 is allow
            assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_config_allow_tf32_reaches_the_backends_and_channels_last_auto_follows_the_table(monkeypatch):
    from corrdiff.config import GenerateSection

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        GenerateSection().fast_path("cuda")
        assert torch.backends.cudnn.allow_tf32 is False  # fp32 means fp32 unless asked
        GenerateSection(allow_tf32=True).fast_path("cuda")
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved
    monkeypatch.setitem(CHANNELS_LAST_AUTO, "cuda", False)
    assert FastPath.resolve("cuda").channels_last is False and FastPath.resolve("cpu").channels_last is True
