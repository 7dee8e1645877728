"""One place that turns the errors a user can fix into one red line and exit code 2, for every command."""

import functools

import typer


def _user_error_types() -> tuple[type[Exception], ...]:
    from corrdiff.config import ConfigError
    from corrdiff.data.errors import DataError
    from corrdiff.evaluation.stores import EvaluationError
    from corrdiff.inference.writer import OutputError
    from corrdiff.training import CheckpointError, TrainingError

    return ConfigError, DataError, EvaluationError, OutputError, CheckpointError, TrainingError


def user_errors(func):
    """Wrap a command: bad config, data, checkpoints or inputs end it with `error: <message>` (exit code 2)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except _user_error_types() as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper
