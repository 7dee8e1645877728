"""The `corrdiff` command line: one command per user task, each a thin layer over the library.

`main.py` assembles the app (train, generate, demo, version), `data.py` and `evaluation.py` hold the
`data`, `score`, `report` and `baseline` commands, and `errors.py` turns any `CorrdiffError` into one line.
"""

from corrdiff.cli.main import app, main

__all__ = ["app", "main"]
