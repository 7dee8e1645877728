"""YAML and JSON documents read whole, with errors of one line: the run config, the dataset spec (both written by
hand), a model package's and Earth2Studio's metadata, and the JSON a checkpoint holds."""

import json
from pathlib import Path

import yaml

from corrdiff.errors import CorrdiffError


def yaml_problem(err: Exception) -> str:
    """A YAML parser error in one line, `line L, column C: what`, without the parser's excerpt of the source."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    parts = [getattr(err, "problem", None), getattr(err, "context", None)]
    what = "; ".join(str(p) for p in parts if p) or str(err).splitlines()[0]
    return where + what


def read_yaml_mapping(path: Path, error: type[CorrdiffError], document: str, holds: str, guide: str = "") -> dict:
    """The mapping at the top of the YAML file `path` (empty for an empty file). Anything else is an `error` that
    names the `document` ("run config"), what its top level `holds` and, when given, the `guide` that describes it."""
    path = Path(path)
    see = f" ({guide})" if guide else ""
    if path.is_dir():
        raise error(f"{document} {path} is a folder; give the {document}'s YAML file")
    if not path.is_file():
        raise error(f"{document} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file; a {document} is YAML{see}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of {holds} at the top level{see}")
    return raw


def json_object(text: str) -> dict:
    """The JSON object in `text`; a ValueError for text that is not JSON or holds something else."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    return data


def read_json_object(path: Path, error: type[CorrdiffError], missing: str) -> dict:
    """The JSON object in file `path`; an `error` saying `missing` when there is no such file, or what is wrong
    with it (unreadable, not JSON, not an object)."""
    path = Path(path)
    try:
        return json_object(path.read_text())
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise error(f"{path}: not readable JSON ({' '.join(str(err).split())[:200]})") from None
