"""`corrdiff data ...` commands: check a dataset spec, compute its statistics, build the demo dataset."""

from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors

app = typer.Typer(help="Prepare datasets: check a spec, normalisation statistics, the embedded demo dataset.",
                  no_args_is_help=True)

SpecArg = Annotated[Path, typer.Argument(help="Dataset spec (YAML): inputs, targets, static fields, splits.")]


@app.command("stats")
@user_errors
def stats(
    spec: SpecArg,
    split: Annotated[str, typer.Option(help="Split the statistics are computed on.")] = "train",
    chunk: Annotated[int, typer.Option(min=1, help="Times read at once (memory is bounded by one chunk).")] = 16,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing statistics (never a file of "
                         "another kind, never one of the spec's data files).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Compute per-channel mean/std of a split, streamed over time, and save them beside the spec.

    The same pass counts NaN/inf values per channel and applies the spec's `nan_policy`: `error` stops
    naming the file, variable and time of the first one; `fill` and `drop` say what training will fill or
    leave out.
    """
    from corrdiff.data import compute_stats, load_spec
    from corrdiff.data.stats import nan_policy_note

    loaded = load_spec(spec)
    result = compute_stats(loaded, split, chunk_times=chunk, progress=not quiet, overwrite=overwrite)
    info = result.info
    typer.echo(f"statistics of {info['times']} times written to {loaded.stats_path}")
    for kind, channels in (("input", result.input), ("target", result.target)):
        for name, mean, std, transform in zip(channels.names, channels.mean, channels.std, channels.transforms):
            extra = f"  ({transform})" if transform else ""
            bad = info["nonfinite"][kind][name]
            typer.echo(f"  {kind:<6} {name:<20} mean {mean:12.5g}  std {std:12.5g}  NaN/inf {bad:>9d}{extra}")
    total = sum(n for counts in info["nonfinite"].values() for n in counts.values())
    if total:
        typer.echo(nan_policy_note(info["nan_policy"], total, info["dropped_times"],
                                   info["times"] + info["dropped_times"]))


@app.command("check")
@user_errors
def check(spec: SpecArg) -> None:
    """Open a spec's data, match times, read one sample of each split and print a summary (NaN/inf: what the
    last `corrdiff data stats` found, which reads every time of its split)."""
    from corrdiff.data import Normalization, PairedFields

    fields = PairedFields(spec)
    typer.echo(f"fine grid {fields.lat.shape[0]}×{fields.lat.shape[1]}, lat {fields.lat.min():.3f}..{fields.lat.max():.3f}, "
               f"lon {fields.lon.min():.3f}..{fields.lon.max():.3f}")
    typer.echo(f"inputs  ({len(fields.input_channels)}): {', '.join(fields.input_channels)}")
    typer.echo(f"targets ({len(fields.target_channels)}): {', '.join(fields.target_channels)}")
    for name in fields.spec.splits or {"all": None}:
        times = fields.times(name)
        fields.read_inputs(times[:1])
        fields.read_targets(times[:1])
        typer.echo(f"split {name:<10} {len(times):6d} times  {str(times[0])[:16]} … {str(times[-1])[:16]}")
    stats_path = fields.spec.stats_path
    if not stats_path.exists():
        typer.echo(f"statistics: none yet (run `corrdiff data stats {spec}`, which also scans every time for NaN/inf)")
        return
    info = Normalization.load(stats_path).info
    if "nonfinite" in info:  # this check reads one time per split; `data stats` scanned all of one split
        bad = sum(n for counts in info["nonfinite"].values() for n in counts.values())
        scanned = f"{bad} NaN/inf values in split {info['split']!r} (nan_policy {info['nan_policy']})"
    else:
        scanned = "not scanned for NaN/inf (older file: rerun `corrdiff data stats --overwrite`)"
    typer.echo(f"statistics: {stats_path}; {scanned}")


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo dataset.")] = Path("demo-data"),
    force: Annotated[bool, typer.Option(help="Rebuild even if a complete dataset is there.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Build the embedded demo dataset (quasi-geostrophic turbulence, coarse-grained ×8) and its spec."""
    from corrdiff.data import build_demo_dataset

    spec = build_demo_dataset(out, progress=not quiet, force=force)
    typer.echo(f"demo dataset ready: {spec}")
