"""Experiments that answer a question by running the whole method several times: `data_size` trains on nested
fractions of the training split and scores each (`corrdiff experiment data-size`; docs/experiments.md)."""

from corrdiff.experiments.data_size import parse_fractions, run_data_size
from corrdiff.experiments.data_size_table import data_size_figure, data_size_table

__all__ = ["data_size_figure", "data_size_table", "parse_fractions", "run_data_size"]
