"""`corrdiff data ...` commands: check a dataset spec, compute its statistics, coarsen fine files, build the demo
dataset."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors

app = typer.Typer(help="Prepare datasets: check a spec, normalisation statistics, coarse inputs made from fine "
                  "data, the embedded demo dataset.",
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


class Method(str, Enum):
    block = "block"
    gaussian = "gaussian"


@app.command("coarsen")
@user_errors
def coarsen(
    fine: Annotated[list[Path], typer.Argument(help="Fine NetCDF or Zarr files (raw wrfout included; a quoted glob "
                                                     "is expanded), their times joined.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The coarse NetCDF file to write.", show_default=False)],
    factor: Annotated[int, typer.Option("--factor", help="Fine cells per coarse cell along each axis (at least 2). "
                                        "A remainder of R rows or columns is left out, R//2 at the start and the "
                                        "rest at the end, so the coarse grid stays centred.", show_default=False)],
    method: Annotated[Method, typer.Option("--method", help="block: the mean of each factor×factor block; "
                                           "gaussian: a Gaussian-weighted mean (σ = --sigma) at the block centres, "
                                           "on the same coarse grid.")] = Method.block,
    sigma: Annotated[float | None, typer.Option("--sigma", help="Width σ of the Gaussian, in fine cells "
                                                "(default: factor / 2).", show_default=False)] = None,
    variable: Annotated[list[str] | None, typer.Option("--variable", help="A variable to coarsen (repeatable, or "
                        "comma-separated); default: every numeric one with a time and the grid's dims. WRF's "
                        "staggered U, V are destaggered first.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier output of this command (never "
                         "another file, never one of the fine files).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Coarse inputs made from fine files alone, for a perfect-model training pair (docs/real-data.md).

    NaN/inf fine values are left out of the means; a coarse cell with less than half of its weight on finite
    values is NaN. The coarse latitude and longitude are the block means of the fine ones (across the date line
    too); a WRF file's projection is kept, with DX and DY times the factor.
    """
    from corrdiff.data.coarsen import Coarsening
    from corrdiff.data.coarsen_file import coarsen_files

    names = [n.strip() for entry in variable or [] for n in entry.split(",") if n.strip()] or None
    done = coarsen_files(fine, out, Coarsening(factor, method.value, sigma), names, overwrite=overwrite,
                         progress=not quiet)
    (fy, fx), (cy, cx) = done.fine_shape, done.coarse_shape
    typer.echo(f"{len(done.variables)} variable(s) ({', '.join(done.variables)}), {done.times} time(s): "
               f"{fy}×{fx} → {cy}×{cx} written to {done.path}")
    (y0, y1), (x0, x1) = done.trimmed
    if y0 + y1 + x0 + x1:
        typer.echo(f"  left out (the factor does not divide the grid): rows {y0} at the start, {y1} at the end; "
                   f"columns {x0} at the start, {x1} at the end")
    if done.destaggered:
        typer.echo(f"  destaggered to the mass points first: {', '.join(done.destaggered)}")
    for name, count in done.nan_values.items():
        if count:
            typer.echo(f"  {name}: {count} coarse values are NaN (less than half of their fine weight finite)")


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
