"""`corrdiff experiment`: experiments that run the whole method several times. The main CLI registers `app`.

`corrdiff experiment data-size RUN.yaml --fractions 0.125 0.25 0.5 1 [--order spread] --out DIR`
(corrdiff.experiments.data_size).
"""

from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors

app = typer.Typer(help="Experiments over whole runs: data efficiency (data-size).", no_args_is_help=True)


@app.command("data-size", context_settings={"allow_extra_args": True})
@user_errors
def data_size_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Run config (YAML): data spec, model, training, sampler, generation.")],
    fractions: Annotated[list[str] | None, typer.Option("--fractions", help="Fractions of the training split, "
                         "increasing, each in (0, 1]: `--fractions 0.125 0.25 0.5 1` (or comma-separated). Each "
                         "keeps ⌈f·N⌉ of the N training times (see --order).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one run per fraction, the table and the "
                   "figure: new, empty, or an earlier data-size experiment of the same settings (resumed).")]
    = Path("data-size"),
    order: Annotated[str, typer.Option("--order", help="How a fraction takes its times: contiguous (the first "
                     "⌈f·N⌉, a block of the record; nested) or spread (⌈f·N⌉ evenly spread over the whole record).")]
    = "contiguous",
    times: Annotated[int | None, typer.Option("--times", min=1, help="Evenly spaced times of generate.split scored "
                     "(default: all of them).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value for every fraction, "
                    "e.g. --set regression.steps=100 (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train both steps on fractions of the training split (same seed, same optimisation steps for every
    fraction), generate and score the same test times for each at its best validation checkpoints (diffusion:
    best-crps), and write data_size.csv, data_size.nc and data_size.png. Rerunning skips the fractions already
    done and resumes an unfinished one."""
    from corrdiff.experiments import run_data_size

    values = [*(fractions or []), *ctx.args]  # `--fractions 0.25 0.5 1`: the values after the first come as extras
    paths = run_data_size(config, values, out, set_ or [], test_count=times, progress=not quiet, echo=typer.echo,
                          order=order)
    for name, path in paths.items():
        typer.echo(f"  {name:<8} {path}")
