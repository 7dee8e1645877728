"""The fast path: switches that make training and sampling faster without changing the method.

Each switch is independent and off in `FastPath()` (the plain path: float32, NCHW, eager, no graphs).
`FastPath.resolve` gives what a config's "auto" values mean: channels-last everywhere, bf16 and CUDA graphs
on CUDA, the fused GroupNorm+SiLU nowhere yet.

- `bf16`: autocast to bfloat16 (matrix products and convolutions; norms and the EDM boundary stay
  float32). Results differ from float32 by bf16 rounding (about 1e-2 relative), see tests/test_fast_path.py.
- `channels_last`: NHWC memory format for the UNet's weights and activations; the same arithmetic in
  another order (about 1e-6 relative in float32). Faster convolutions on CUDA tensor cores, and with
  oneDNN on CPU: 10-25% on the paper and demo networks (docs/benchmarks.md).
- `compile`: `torch.compile` of the network; when the compiler is unavailable or fails on the first call,
  one warning gives the reason and the network runs eagerly (`CompiledOrEager`, whose `ran_compiled` tells
  which happened). Errors inside a CUDA-graph capture are never swallowed.
- `fused_norm`: the UNet's GroupNorm+SiLU pairs computed by `corrdiff.models.layers.group_norm_silu`, which
  inductor fuses (float32 statistics, bf16 in and out under autocast) instead of torch's GroupNorm, which
  autocast runs in float32 with casts around it. Equal to float32 round-off; pays only when compiled, so its
  "auto" is on only with `compile` and where `FUSED_NORM_AUTO` says the device measured faster.
- `cuda_graphs`: the sampler's denoiser call, whose shapes are fixed for a whole ensemble, is captured once
  in a CUDA graph and replayed (`GraphedDenoiser`); CUDA only.

The process's CUDA math settings are set once per run by `configure_backends` (called by the config's
`fast_path`): TF32 for float32 convolutions and matrix products only when `allow_tf32` (PyTorch's own default
runs float32 convolutions in TF32, 10-bit mantissa), and cuDNN autotuning (`cudnn.benchmark`), since a run's
shapes are fixed.

Members are batched by the sampler itself (`sample_ensemble(batch_size=...)`), and its loop makes no
host-device synchronisation: noise levels are host floats, every tensor op is queued asynchronously.
"""

import contextlib
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from corrdiff.models.layers import set_fused_norm

Auto = Literal["auto"] | bool

# What `channels_last: auto` means per device type. CPU: measured faster (docs/benchmarks.md, 10-25%). CUDA:
# on, as before, until `make gpu-check` measures it (its channels-last rows); change it here from that table.
CHANNELS_LAST_AUTO = {"cpu": True, "cuda": True}

# What `fused_norm: auto` means per device type, for a compiled network (uncompiled it is never on by itself).
# Off until `make gpu-check` measures it (bench_layout.py --fused-norm, its "fused GroupNorm+SiLU" table).
# CPU, float32, compiled: the same forward time, a slower forward+backward (docs/benchmarks.md).
FUSED_NORM_AUTO = {"cpu": False, "cuda": False}


@dataclass(frozen=True)
class FastPath:
    """Which optimisations to apply; `FastPath()` is the plain path."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    fused_norm: bool = False

    @classmethod
    def resolve(cls, device, precision: str = "auto", channels_last: Auto = "auto", compile: bool = False,
                cuda_graphs: Auto = "auto", fused_norm: Auto = "auto") -> "FastPath":
        """Switches for `device` from config values; "auto": CHANNELS_LAST_AUTO, bf16 and graphs on CUDA, and
        FUSED_NORM_AUTO when compiling.

        `precision` is "auto", "fp32" or "bf16". CUDA graphs asked for on another device are dropped with
        a warning (a config may be shared between a GPU cluster and a laptop).
        """
        on_cuda = torch.device(device).type == "cuda"
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        graphs = on_cuda if cuda_graphs == "auto" else bool(cuda_graphs)
        if graphs and not on_cuda:
            warnings.warn(f"cuda_graphs needs a CUDA device, not {device}; running without graphs", stacklevel=2)
            graphs = False
        return cls(
            bf16=precision == "bf16" or (precision == "auto" and on_cuda),
            channels_last=CHANNELS_LAST_AUTO.get(torch.device(device).type, False) if channels_last == "auto"
            else bool(channels_last),
            compile=bool(compile),
            cuda_graphs=graphs,
            fused_norm=(bool(compile) and FUSED_NORM_AUTO.get(torch.device(device).type, False))
            if fused_norm == "auto" else bool(fused_norm),
        )


def autocast(enabled: bool, device, cache_enabled: bool = True):
    """bf16 autocast on `device` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, cache_enabled=cache_enabled)


def configure_backends(device, allow_tf32: bool = False, cudnn_benchmark: bool = True) -> dict[str, bool]:
    """Set the process's CUDA math settings for a run on `device`; returns the settings as set.

    `allow_tf32` decides whether float32 convolutions and matrix products may use TF32 (both set alike,
    where PyTorch's defaults differ: TF32 convolutions, full float32 matrix products). `cudnn_benchmark`
    lets cuDNN time its algorithms once per shape: a run's shapes are fixed, so this pays off after the
    first calls. Nothing is changed on other devices.
    """
    if torch.device(device).type != "cuda":
        return {}
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark
    return {"allow_tf32": allow_tf32, "cudnn_benchmark": cudnn_benchmark}


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store the module's 4-D weights as NHWC, in place; convolutions then produce NHWC activations."""
    return module.to(memory_format=torch.channels_last)


class CompiledOrEager(nn.Module):
    """`torch.compile(module)`, falling back to the eager module (with one warning) if compiling fails.

    torch.compile is lazy: a missing C++ compiler or Triton shows only at the first call, so the fallback
    wraps the calls, not just the construction. A call that fails compiled is run eagerly: if eager fails
    too, the error is the call's own and is raised (nothing falls back); if eager succeeds, the compiler was
    at fault, a warning gives the reason once, and the module stays eager from then on (`reason` keeps it).
    Out-of-memory errors and any error during a CUDA-graph capture are raised as they are (an eager re-run
    inside a broken capture would be captured wrong). `ran_compiled` is True once a call ran compiled code
    and no fallback happened. Other attributes are looked up on the wrapped module (`.module`).
    """

    def __init__(self, module: nn.Module, **compile_kwargs):
        super().__init__()
        self.module = module
        self.compiled = None
        self.reason: str | None = None
        self.compiled_calls = 0
        try:
            self.compiled = torch.compile(module, **compile_kwargs)
        except Exception as err:  # the compiler's absence shows up as many exception types
            self._fall_back(err)

    @property
    def failed(self) -> bool:
        return self.reason is not None

    @property
    def ran_compiled(self) -> bool:
        return self.compiled_calls > 0 and self.reason is None

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)  # e.g. a sampler asking the wrapped network for its sigma_min

    def _fall_back(self, err: Exception) -> None:
        self.compiled = None
        self.reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        warnings.warn(f"torch.compile failed ({self.reason}); running eagerly from now on", stacklevel=3)

    def forward(self, *args, **kwargs):
        if self.compiled is None:
            return self.module(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise  # not the compiler's fault: eager would run out too
        except Exception as err:
            if _capturing():
                raise  # no eager re-run inside a capture: it would be captured into a broken graph
            out = self.module(*args, **kwargs)  # raises the call's own error if eager fails as well
            self._fall_back(err)
            return out
        self.compiled_calls += 1
        return out


def _capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def compile_module(module: nn.Module, **compile_kwargs) -> nn.Module:
    """`module` compiled with torch.compile, or eager if the compiler is unavailable (see CompiledOrEager)."""
    return CompiledOrEager(module, **compile_kwargs)


class FastDenoiser(nn.Module):
    """A denoiser D(x, sigma, condition, positions) run on the fast path; same call, float32 out.

    Built once per process by `prepare_denoiser`, it owns the channels-last conversion, the fused-norm switch,
    the compiled network and the CUDA graphs (one per input shape, kept across calls).
    """

    def __init__(self, denoiser: nn.Module, fast: FastPath):
        super().__init__()
        self.fast = fast
        self.denoiser = denoiser
        if fast.channels_last:
            to_channels_last(denoiser)
        if fast.fused_norm:
            set_fused_norm(denoiser)
        self.net = compile_module(denoiser) if fast.compile else denoiser
        self.graphs: dict[tuple, GraphedDenoiser] = {}

    def forward(self, x, sigma, condition=None, positions=None):
        if self.fast.cuda_graphs and x.is_cuda and positions is None:
            key = (tuple(x.shape), tuple(sigma.shape), None if condition is None else tuple(condition.shape))
            if key not in self.graphs:
                self.graphs[key] = GraphedDenoiser(self._eager_call)
            return self.graphs[key](x, sigma, condition)
        return self._eager_call(x, sigma, condition, positions)

    def reset(self) -> None:
        """Forget the compiled code and CUDA graphs, after something changed what the network computes (e.g. its
        GroupNorm variance, `corrdiff.models.layers.set_unbiased_norm`): the next calls compile and capture anew."""
        self.graphs.clear()
        if self.fast.compile:
            self.net = compile_module(self.denoiser)

    def _eager_call(self, x, sigma, condition=None, positions=None):
        # The autocast cache must be off inside a CUDA graph capture (cast weights would be captured stale).
        with autocast(self.fast.bf16, x.device, cache_enabled=not self.fast.cuda_graphs):
            return self.net(x, sigma, condition, positions).to(torch.float32)


def prepare_denoiser(denoiser: nn.Module, fast: FastPath | None) -> nn.Module:
    """The denoiser to sample with: unchanged on the plain path, else wrapped in a FastDenoiser."""
    if fast is None or fast == FastPath():
        return denoiser
    return FastDenoiser(denoiser, fast)


class GraphedDenoiser:
    """A denoiser call replayed from one CUDA graph; the inputs are copied into static buffers each call.

    The first call runs eagerly on a side stream (which also warms up cuDNN and the compiler) and returns
    that result, then captures the graph; later calls with inputs of the same shapes replay it. The
    returned tensor is a copy: the graph's output buffer is overwritten by the next replay.
    """

    def __init__(self, call):
        self.call = call
        self.graph = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        if self.graph is None:
            return self._capture(x, sigma, condition)
        self.static_x.copy_(x)
        self.static_sigma.copy_(sigma)
        if condition is not None:
            self.static_condition.copy_(condition)
        self.graph.replay()
        return self.static_out.clone()

    def _capture(self, x, sigma, condition):
        self.static_x, self.static_sigma = x.clone(), sigma.clone()
        self.static_condition = None if condition is None else condition.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            first = self.call(self.static_x, self.static_sigma, self.static_condition)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_out = self.call(self.static_x, self.static_sigma, self.static_condition)
        self.graph = graph
        return first
