"""The errors a user can fix: one base class, one subclass per kind of input.

Every command catches `CorrdiffError` and prints its message as one line (exit code 2); anything else is
a bug and keeps its traceback. Messages name the file, the key or variable, and what to do.
"""


class CorrdiffError(Exception):
    """A problem the user can fix (bad file, config, checkpoint, argument, full disk); the message says how."""


class ConfigError(CorrdiffError, ValueError):
    """A run configuration or argument that cannot be used; the message names the file and the key."""


class DataError(CorrdiffError, ValueError):
    """Data or a dataset spec that cannot be used; the message names the file, the variable and what was expected."""


class CheckpointError(CorrdiffError, RuntimeError):
    """A checkpoint that cannot be written or read; the message names the path."""


class TrainingError(CorrdiffError, RuntimeError):
    """Training cannot go on (non-finite loss, out of memory); the message says what to do."""


class OutputError(CorrdiffError, RuntimeError):
    """An output file that cannot be written or resumed; the message names it."""


class EvaluationError(CorrdiffError, RuntimeError):
    """Forecasts and truth that cannot be scored together; the message names the file and what differs."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its whitespace runs as single spaces), at most 300 characters."""
    return " ".join(str(err).split())[:300]


def validation_problems(err, top: str = "") -> str:
    """A pydantic ValidationError's problems on one line, "where: what; …" (`top` names an error of the whole)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or top}: {e['msg']}" for e in err.errors())
