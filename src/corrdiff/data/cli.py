"""`corrdiff data ...` commands: dataset statistics and the demo dataset."""

import typer

app = typer.Typer(help="Prepare datasets: normalisation statistics and the embedded demo dataset.", no_args_is_help=True)
