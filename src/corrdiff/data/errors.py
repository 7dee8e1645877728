"""The one exception the data pipeline raises for problems a user can fix."""


class DataError(ValueError):
    """Data or a dataset spec that cannot be used; the message names the file, the variable and what was expected."""
