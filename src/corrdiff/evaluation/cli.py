"""`corrdiff score`, `corrdiff report` and `corrdiff baseline ...` commands."""

import typer

baseline_app = typer.Typer(help="Baselines written in the same NetCDF layout as `corrdiff generate`.", no_args_is_help=True)
