"""Stitched (multi-diffusion) sampling of a large domain: peak memory and time of one denoiser call.

Three cases at 448² with 64² patches (overlap 8: 64 patches), 8 members, a small patch-trained network with
global context:
  repeated   the stitched call as corrdiff made it until 2026-11: every crop taken from its own copy of the
             whole domain (x and condition repeated once per patch), the condition cut at every call
  gathered   corrdiff's PatchedDenoiser: crops gathered by index, the condition cut once per ensemble
  one batch  the network on one batch of `max_batch` patches alone: the floor any stitched call needs
Target (issue 16): the stitched call's peak ≤ 2× that of one batch alone.

CPU memory is measured in a child process whose allocator unmaps freed tensors (glibc mmap threshold
64 KiB), so the resident high-water mark follows the live tensors; on CUDA it is the allocated peak.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, fmt_s, interleaved, peak_mib, pick_device, print_table, write_results  # noqa: E402

from corrdiff.diffusion import (  # noqa: E402
    crop, DiffusionCondition, diffusion_network, EDMPrecond, global_context, PatchedDenoiser)
from corrdiff.models import presets  # noqa: E402


def setup(args, device):
    """The network, the patcher and one call's inputs (x, sigma, condition field)."""
    torch.manual_seed(0)
    unet = presets["tiny"].replace(img_shape=(args.size, args.size), in_channels=12, out_channels=4,
                                   attn_resolutions=(), global_context=True)
    condition = DiffusionCondition.from_unet(unet)
    denoiser = EDMPrecond(diffusion_network(unet), sigma_data=0.5).to(device).eval()
    patcher = PatchedDenoiser((args.size, args.size), (args.patch, args.patch), (8, 8), args.max_batch, condition)
    x = torch.randn(args.members, unet.out_channels, args.size, args.size, device=device)
    field = torch.randn(1, condition.field_channels, args.size, args.size, device=device).expand(args.members, -1, -1, -1)
    return denoiser, patcher, x, torch.full((args.members,), 2.0, device=device), field


def repeated_domain_call(patcher, denoiser, x, sigma, field):
    """The stitched call before: the domain repeated once per patch, then cropped (for comparison only)."""
    batch, n, patch = x.shape[0], len(patcher.offsets), patcher.patch_shape
    positions = patcher.offsets.repeat(batch, 1)
    x_patches = crop(x.repeat_interleave(n, 0), positions, patch)
    c_patches = crop(field.repeat_interleave(n, 0), positions, patch)
    c_patches = torch.cat([c_patches, global_context(field, patch).repeat_interleave(n, 0)], dim=1)
    sigmas = sigma.repeat_interleave(n)
    step = patcher.max_batch
    out = torch.cat([denoiser(x_patches[i : i + step], sigmas[i : i + step], c_patches[i : i + step],
                              positions[i : i + step].to(x.device)) for i in range(0, len(x_patches), step)])
    return patcher.stitch(out.reshape(batch, n, *out.shape[1:]))


def calls(args, device):
    denoiser, patcher, x, sigma, field = setup(args, device)
    offsets = patcher.offsets.to(device)
    one = (x[:1].expand(args.max_batch, -1, -1, -1)[:, :, : args.patch, : args.patch].contiguous(),
           sigma[:1].expand(args.max_batch), patcher.condition.tiles(field[:1], offsets[:1], patcher.patch_shape)
           .expand(args.max_batch, -1, -1, -1).contiguous(), offsets[:1].expand(args.max_batch, -1))

    def gathered():
        patcher._condition_key = None  # a new ensemble: the condition is cut once, inside this call
        return patcher(denoiser, x, sigma, field)

    return {
        "repeated": lambda: repeated_domain_call(patcher, denoiser, x, sigma, field),
        "gathered": gathered,
        "one batch": lambda: denoiser(*one),
    }


def memory(args, device) -> dict[str, float]:
    with torch.no_grad():
        return {name: peak_mib(call, device) for name, call in calls(args, device).items()}


def cpu_memory_in_child(args) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        command = [sys.executable, __file__, "--memory-only", str(out), "--device", "cpu", "--size", str(args.size),
                   "--patch", str(args.patch), "--members", str(args.members), "--max-batch", str(args.max_batch)]
        result = subprocess.run(command, env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"),
                                capture_output=True, text=True)
        if result.returncode != 0:
            print(f"memory measurement failed: {result.stderr[-2000:]}")
            return {}
        return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 128² domain, 2 members")
    parser.add_argument("--memory-only", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.members, args.repeats = 128, 2, 1
    device = pick_device(args.device)
    if args.memory_only:
        Path(args.memory_only).write_text(json.dumps(memory(args, device)))
        return 0
    peaks = cpu_memory_in_child(args) if device.type == "cpu" else memory(args, device)
    with torch.no_grad():
        times = interleaved(calls(args, device), args.repeats, device)
    floor = peaks.get("one batch")
    rows, records = [], []
    for name in ("repeated", "gathered", "one batch"):
        mib = peaks.get(name)
        rows.append([name, fmt_s(times[name]["median_s"]), "-" if mib is None else f"{mib:,.0f}",
                     "-" if not (mib and floor) else f"{mib / floor:.2f}"])
        records.append({"case": name, "median_s": times[name]["median_s"], "peak_mib": mib})
    title = (f"stitched denoiser call, {args.size}² domain, {args.patch}² patches, {args.members} members, "
             f"max_batch {args.max_batch} ({environment(device)['device']})")
    print_table(title, ["case", "time", "peak MiB", "× one batch"], rows)
    write_results("patching", {**environment(device), **{k: getattr(args, k) for k in
                               ("size", "patch", "members", "max_batch")}, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
