"""Layout and normalisation choices for corrdiff's denoiser on one device: the measurements behind the perf tables.

Default: NCHW against channels-last (`corrdiff.fast_path.CHANNELS_LAST_AUTO`), eager; writes
benchmarks/results/channels_last.json. With --fused-norm: the compiled denoiser (in the device's channels-last
setting) with torch's GroupNorm then SiLU against the fused GroupNorm+SiLU (`corrdiff.fast_path.FUSED_NORM_AUTO`);
writes benchmarks/results/fused_norm.json, with whether each contender really ran compiled.

The paper denoiser's sampling forward (eval, no_grad) and training forward+backward, in the device's
default precision (bf16 autocast on CUDA, float32 on CPU), each contender timed in turns, each JSON with a
recommendation for the table it decides.

usage: python benchmarks/bench_layout.py [--fused-norm] [--device cuda] [--size 448] [--batch 4] [--repeats 5]
         [--kinds forward forward+backward] [--preset paper]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_unet import cases_for, inputs  # noqa: E402
from common import environment, fmt_s, interleaved, pick_device, write_results  # noqa: E402
from contenders import config_for, ours  # noqa: E402

from corrdiff.diffusion import SamplerConfig  # noqa: E402
from corrdiff.fast_path import CHANNELS_LAST_AUTO, FastPath  # noqa: E402

KINDS = ("forward", "forward+backward")


def contenders_for(config, device, fused_norm: bool) -> dict:
    """(baseline, candidate) contenders: NCHW and channels-last, or compiled plain and fused GroupNorm+SiLU."""
    if not fused_norm:
        return {"nchw": ours(config, device, SamplerConfig()),
                "channels_last": ours(config, device, SamplerConfig(), FastPath(channels_last=True))}
    layout = CHANNELS_LAST_AUTO.get(device.type, False)
    return {name: ours(config, device, SamplerConfig(), FastPath(channels_last=layout, compile=True, fused_norm=fused))
            for name, fused in (("plain_norm", False), ("fused_norm", True))}


def recommendation(records: list[dict], device, fused_norm: bool) -> str:
    """Which setting the measurement supports: the candidate on where it is faster in every case."""
    base, candidate = ("plain_norm", "fused_norm") if fused_norm else ("nchw", "channels_last")
    faster = all(r[f"{candidate}_s"] < r[f"{base}_s"] for r in records)
    slower = all(r[f"{candidate}_s"] > 1.05 * r[f"{base}_s"] for r in records)
    if fused_norm:
        eager = [n for n in (base, candidate) if not all(r[f"{n}_ran_compiled"] for r in records)]
        if eager:
            return f"FUSED_NORM_AUTO[{device.type!r}]: no decision, {' and '.join(eager)} did not run compiled."
        return f"FUSED_NORM_AUTO[{device.type!r}]: " + ("turn it on (True)." if faster else "keep it off (False).")
    verdict = "keep channels-last on" if faster else "set it off" if slower else "mixed: keep the current setting"
    return f"CHANNELS_LAST_AUTO[{device.type!r}]: {verdict}."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fused-norm", action="store_true", help="compiled: plain against fused GroupNorm+SiLU")
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None, help="grid side (default 448 on CUDA, 32 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default 4 on CUDA, 1 on CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--preset", default="paper", help="network preset (default: paper)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    size, batch = args.size or (448 if on_cuda else 32), args.batch or (4 if on_cuda else 1)
    config = config_for((size, size), args.preset)
    contenders = contenders_for(config, device, args.fused_norm)
    x, sigma, condition = inputs(config, batch, device)
    records = []
    for kind in args.kinds:
        for contender in contenders.values():
            contender.denoiser.train(kind != "forward")
        calls = {name: cases_for(c.denoise, x, sigma, condition, on_cuda, device)[kind]
                 for name, c in contenders.items()}
        timed = interleaved(calls, args.repeats, device)
        record = {"case": f"{size}² b{batch} {'bf16' if on_cuda else 'fp32'} {kind}"}
        record |= {f"{name}_s": timed[name]["median_s"] for name in contenders}
        if args.fused_norm:
            record |= {f"{name}_ran_compiled": c.ran_compiled() for name, c in contenders.items()}
        records.append(record)
        print(f"{record['case']}: " + ", ".join(f"{name} {fmt_s(record[f'{name}_s'])}" for name in contenders),
              flush=True)
    advice = recommendation(records, device, args.fused_norm)
    print(advice)
    name = "fused_norm" if args.fused_norm else "channels_last"
    write_results(name, {"benchmark": name, **environment(device), "preset": args.preset, "records": records,
                         "recommendation": advice})
    return 0


if __name__ == "__main__":
    sys.exit(main())
