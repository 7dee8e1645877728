"""The `corrdiff` command line: one command per user task, each a thin layer over the library."""

import typer

from corrdiff.data.cli import app as data_app
from corrdiff.evaluation.cli import baseline_app

app = typer.Typer(
    help="Generative km-scale downscaling with residual corrective diffusion (CorrDiff).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")


@app.command()
def version() -> None:
    """Print the corrdiff version."""
    from corrdiff import __version__

    typer.echo(__version__)
