"""`python -m corrdiff` runs the command line (what torchrun launches with `-m corrdiff`)."""

from corrdiff.cli import app

app()
