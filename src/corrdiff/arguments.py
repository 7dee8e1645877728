"""Checks of the arguments a user gives, on the command line or to the Python API, where they are read.

Each gives the value back when it can be used, and otherwise raises a `ConfigError` of one line that names the
argument, the value and what is allowed: `--nfe 0: expected a whole number of at least 1`. `name` is what the
user wrote: an option (`--section`) or a keyword (`which`).
"""

import math
import numbers

from corrdiff.errors import ConfigError


def one_of(name: str, value, allowed):
    """`value` when it is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"{name} {value!r}: expected one of {', '.join(repr(a) for a in allowed)}")
    return value


def whole_number(name: str, value, minimum: int = 0) -> int:
    """`value` as an int when it is a whole number (not a bool, not 1.5) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} {value!r}: expected a whole number of at least {minimum}")
    return int(value)


def at_least(name: str, value, minimum: float, what: str = "a number") -> float:
    """`value` as a float when it is a number (not NaN) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= minimum:
        raise ConfigError(f"{name} {value!r}: expected {what} of at least {minimum:g}")
    return float(value)


def latitude(name: str, value) -> float:
    """Degrees north, within -90..90."""
    if not (isinstance(value, numbers.Real) and -90 <= value <= 90):
        raise ConfigError(f"{name}: latitude {value:g} is not within -90..90 degrees north"
                          if isinstance(value, numbers.Real) else f"{name}: latitude {value!r} is not a number")
    return float(value)


def longitude(name: str, value) -> float:
    """Degrees east, within -180..360 (both the -180..180 and the 0..360 conventions)."""
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and -180 <= value <= 360):
        raise ConfigError(f"{name}: longitude {value:g} is not within -180..360 degrees east"
                          if isinstance(value, numbers.Real) else f"{name}: longitude {value!r} is not a number")
    return float(value)
