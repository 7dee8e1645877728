"""NCHW against channels-last for corrdiff's denoiser on one device: the measurement behind CHANNELS_LAST_AUTO.

The paper denoiser's sampling forward (eval, no_grad) and training forward+backward, in the device's
default precision (bf16 autocast on CUDA, float32 on CPU), each layout timed in turns; writes
benchmarks/results/channels_last.json with a recommendation for `corrdiff.perf.CHANNELS_LAST_AUTO`.

usage: python benchmarks/bench_layout.py [--device cuda] [--size 448] [--batch 4] [--repeats 5]
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
from corrdiff.perf import FastPath  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None, help="grid side (default 448 on CUDA, 32 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default 4 on CUDA, 1 on CPU")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    size, batch = args.size or (448 if on_cuda else 32), args.batch or (4 if on_cuda else 1)
    config = config_for((size, size))
    contenders = {"nchw": ours(config, device, SamplerConfig()),
                  "channels_last": ours(config, device, SamplerConfig(), FastPath(channels_last=True))}
    x, sigma, condition = inputs(config, batch, device)
    records = []
    for kind in ("forward", "forward+backward"):
        for contender in contenders.values():
            contender.denoiser.train(kind != "forward")
        calls = {name: cases_for(c.denoise, x, sigma, condition, on_cuda, device)[kind]
                 for name, c in contenders.items()}
        timed = interleaved(calls, args.repeats, device)
        records.append({"case": f"{size}² b{batch} {'bf16' if on_cuda else 'fp32'} {kind}",
                        "nchw_s": timed["nchw"]["median_s"], "channels_last_s": timed["channels_last"]["median_s"]})
        print(f"{records[-1]['case']}: NCHW {fmt_s(records[-1]['nchw_s'])}, "
              f"channels-last {fmt_s(records[-1]['channels_last_s'])}", flush=True)
    faster = all(r["channels_last_s"] < r["nchw_s"] for r in records)
    slower = all(r["channels_last_s"] > 1.05 * r["nchw_s"] for r in records)
    verdict = "keep channels-last on" if faster else "set it off" if slower else "mixed: keep the current setting"
    recommendation = f"CHANNELS_LAST_AUTO[{device.type!r}]: {verdict}."
    print(recommendation)
    write_results("channels_last", {"benchmark": "channels_last", **environment(device), "records": records,
                                    "recommendation": recommendation})
    return 0


if __name__ == "__main__":
    sys.exit(main())
