"""`corrdiff import physicsnemo` and `corrdiff export`: checkpoints to and from NVIDIA PhysicsNeMo / Earth2Studio, and
corrdiff's own model packages (`corrdiff.inference.model_package`)."""

from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors
from corrdiff.errors import ConfigError, OutputError

import_app = typer.Typer(help="Import networks trained with another CorrDiff implementation as a corrdiff run folder.",
                         no_args_is_help=True)


@import_app.command("physicsnemo")
@user_errors
def import_physicsnemo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (regression/, diffusion/).")],
    regression: Annotated[Path | None, typer.Option(help="Regression checkpoint (.mdlus: CorrDiffRegressionUNet or UNet).")] = None,
    diffusion: Annotated[Path | None, typer.Option(help="Diffusion checkpoint (.mdlus: EDMPrecondSuperResolution or EDMPrecondSR).")] = None,
    stats: Annotated[Path | None, typer.Option(help="Channel names and normalisation: a corrdiff statistics file or Earth2Studio's stats.json.")] = None,
    grid: Annotated[Path | None, typer.Option(help="Fine grid: NetCDF or Zarr with lat/lon (1-D or 2-D) or XLAT/XLONG.")] = None,
    package: Annotated[Path | None, typer.Option(help="An Earth2Studio CorrDiff package folder, or the unzipped CorrDiff Taiwan package: checkpoints, statistics and grid in one.")] = None,
    only: Annotated[str | None, typer.Option(help="With --package: import only 'regression' or 'diffusion'.")] = None,
) -> None:
    """Convert PhysicsNeMo (or Modulus) CorrDiff checkpoints into corrdiff checkpoints that `corrdiff generate` uses.

    Give the checkpoints with --regression/--diffusion plus --stats and --grid, or a --package folder (whose
    files the other options override). Only tensors are read from the checkpoints; an architecture option
    corrdiff lacks is refused by name. Generate with a run config whose run_dir is --out and whose dataset spec
    gives the same input, static and target channels.
    """
    from corrdiff.interop import import_physicsnemo, read_grid, read_package, read_stats
    from corrdiff.output_paths import check_not_an_input

    if only not in (None, "regression", "diffusion"):
        raise ConfigError(f"--only must be 'regression' or 'diffusion', got {only!r}")
    check_not_an_input(out, {"the regression checkpoint": [regression], "the diffusion checkpoint": [diffusion],
                             "the statistics file": [stats], "the grid file": [grid], "the package": [package]})
    _check_out_folder(out)
    notes = []
    if package is not None:
        found = read_package(package)
        regression = regression or (found.regression if only != "diffusion" else None)
        diffusion = diffusion or (found.diffusion if only != "regression" else None)
        normalization, (lat, lon), notes = found.stats, (found.lat, found.lon), list(found.notes)
        if found.sampler:
            notes.append("the package samples with " + ", ".join(f"{k}={v}" for k, v in found.sampler.items())
                         + ": set these in the run config's sampler section")
    else:
        missing = [name for name, value in (("--stats", stats), ("--grid", grid)) if value is None]
        if missing:
            raise ConfigError(f"give {' and '.join(missing)} (or a --package folder): an imported network needs its "
                              "channel names, normalisation and fine grid")
    if stats is not None:
        normalization = read_stats(stats)
    if grid is not None:
        lat, lon = read_grid(grid)
    result = import_physicsnemo(out, normalization, lat, lon, regression=regression, diffusion=diffusion)
    for kind, folder in result.checkpoints.items():
        typer.echo(f"{kind} checkpoint written: {folder}")
    for note in notes + result.notes:
        typer.echo(f"note: {note}")


@user_errors
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder holding regression/ and diffusion/ checkpoints.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the exported files (a new or empty folder for a package).")],
    format_: Annotated[str, typer.Option("--format", help="package: a corrdiff model package (`corrdiff generate --model`, `corrdiff.load`); physicsnemo: .mdlus files and Earth2Studio package files.")] = "package",
    which: Annotated[str, typer.Option(help="Checkpoint of each run: best (lowest validation loss), best-crps "
                     "(diffusion: lowest validation fair CRPS of the sample check; the regression's best) or latest.")]
    = "best",
    config: Annotated[Path | None, typer.Option(help="package: the run config whose dataset spec gives the input rules and static fields (default: the one recorded in the diffusion checkpoint).")] = None,
    checkpoint_diffusion: Annotated[Path | None, typer.Option(help="package: the diffusion checkpoint or run folder to package instead of <run_dir>/diffusion, e.g. the consistency student <run_dir>/distill (`corrdiff train distill`).")] = None,
) -> None:
    """Export a run's networks: as a self-contained corrdiff model package (default), or for NVIDIA PhysicsNeMo 2.2
    (`Module.from_checkpoint`) and Earth2Studio."""
    from corrdiff.checkpoint import POINTERS
    from corrdiff.failed_writes import whole_or_nothing, write_errors

    if which not in POINTERS:
        raise ConfigError(f"--which must be one of {', '.join(POINTERS)}, got {which!r}")
    if format_ not in ("package", "physicsnemo"):
        raise ConfigError(f"--format must be 'package' or 'physicsnemo', got {format_!r}")
    _check_out_folder(out)
    if format_ == "package":
        from corrdiff.inference import model_package
        from corrdiff.config import load_config

        with write_errors(out, "writing the model package"):  # write() removes its temporary folder itself
            package = model_package.export(run_dir, out, load_config(config) if config else None, which,
                                           checkpoint_diffusion)
        typer.echo(f"model package written: {out} (sampler: {package.sampler_source})")
        return
    if checkpoint_diffusion is not None:
        raise ConfigError("--checkpoint-diffusion applies to --format package; --format physicsnemo exports the run's "
                          "diffusion/ checkpoint (PhysicsNeMo has no consistency student)")
    from corrdiff import locks
    from corrdiff.inference.checks import checkpoint_inputs
    from corrdiff.interop import export_physicsnemo
    from corrdiff.output_paths import check_not_an_input, make_folder

    check_not_an_input(out, checkpoint_inputs({kind: run_dir / kind for kind in ("regression", "diffusion")}, which))
    make_folder(out)
    with locks.for_output(out), whole_or_nothing(out, "exporting for PhysicsNeMo"):  # no half set of files
        files, notes = export_physicsnemo(run_dir, out, which)
    for path in files:
        typer.echo(f"written: {path}")
    for note in notes:
        typer.echo(f"note: {note}")


def _check_out_folder(out: Path) -> None:
    """--out must be a folder or a path where one can be made: not a file, nor under one."""
    from corrdiff.output_paths import check_folder

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file, not a folder; give a new or empty folder")
    check_folder(out)
