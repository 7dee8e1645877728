"""One place that turns the errors a user can fix into one red line and exit code 2, for every command."""

import functools

import typer

from corrdiff.errors import CorrdiffError


def user_errors(func):
    """Wrap a command: a `CorrdiffError` (bad config, data, checkpoint, input) ends it with `error: <message>`, exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CorrdiffError as err:
            # One line, whatever a message quotes from a library below (parsers and backends write several).
            message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
            typer.secho(f"error: {message}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper
