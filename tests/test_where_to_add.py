"""docs/architecture.md's "Where to add" stays true: each change names files that exist and the tests that keep
it, and the checks below keep each list whole: no copy of a list of choices outside the files named, every
command wrapped for one-line errors and in the README, every writing command under the output rule, every
checkpoint field written and read."""

import ast
import dataclasses
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import typer.main

from corrdiff import checkpoint
from corrdiff.cli.main import app
from corrdiff.data.spec import INPUT_KEYS
from corrdiff.diffusion.solvers import SOLVERS
from corrdiff.evaluation.scores import SCORES

REPO = Path(__file__).parents[1]
DOC = REPO / "docs" / "architecture.md"
CHANGES = ("A new solver", "A new input format or source layout", "A new score", "A new checkpoint field",
           "A new CLI command", "A new output rule", "A new output format")


def where_to_add(text: str) -> dict[str, dict[str, list[str]]]:
    """Change -> {"files": [...], "kept": [...]}: the backquoted paths after `Files:` and `Kept by:`."""
    section = text.split("## Where to add", 1)[1].split("\n## ", 1)[0]
    changes = {}
    for item in re.split(r"\n- \*\*", section)[1:]:
        name, body = item.split("**", 1)
        body = " ".join(body.split())
        lists = {}
        for key, label in (("files", "Files:"), ("kept", "Kept by:")):
            found = re.search(re.escape(label) + r"(.*?)(?:Kept by:|$)", body)
            lists[key] = re.findall(r"`([^`]+)`", found.group(1)) if found else []
        changes[name] = lists
    return changes


def test_the_parser_reads_a_change_and_its_lists():
    text = ("## Where to add\n\nintro\n\n- **A new thing**: prose with `not_a_file`.\n  Files: `a.py`,\n  `b.md`.\n"
            "  Kept by: `tests/t.py`.\n- **Another**: none.\n\n## Next\n- **Not here**: Files: `c.py`.\n")
    assert where_to_add(text) == {"A new thing": {"files": ["a.py", "b.md"], "kept": ["tests/t.py"]},
                                  "Another": {"files": [], "kept": []}}


def test_each_change_names_files_that_exist_and_tests_that_keep_it():
    changes = where_to_add(DOC.read_text())
    assert set(CHANGES) <= set(changes), f"missing: {set(CHANGES) - set(changes)}"
    for name, lists in changes.items():
        assert lists["files"], f"{name}: no Files: list"
        assert lists["kept"], f"{name}: no Kept by: list"
        for path in lists["files"] + lists["kept"]:
            assert (REPO / path).exists(), f"{name}: {path} does not exist"
        for path in lists["kept"]:
            assert path.startswith("tests/") and "def test_" in (REPO / path).read_text(), f"{name}: {path}"


def copies_of(names: set[str], most_of: int) -> dict[str, list[int]]:
    """Source file (relative to the repo) -> lines of literal lists, tuples, sets or dict keys that hold at least
    `most_of` of `names`: a copy of the list (perhaps missing the newest)."""
    found = {}
    for path in sorted((REPO / "src" / "corrdiff").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [key for key in node.keys if key is not None]
            else:
                continue
            held = {item.value for item in items if isinstance(item, ast.Constant) and item.value in names}
            if len(held) >= most_of:
                found.setdefault(str(path.relative_to(REPO)), []).append(node.lineno)
    return found


@pytest.mark.parametrize("change, names", [("A new solver", set(SOLVERS)), ("A new score", set(SCORES)),
                                           ("A new input format or source layout", set(INPUT_KEYS))],
                         ids=["solvers", "scores", "input keys"])
def test_a_list_of_choices_is_written_only_in_the_files_its_change_names(change, names):
    files = set(where_to_add(DOC.read_text())[change]["files"])
    copies = copies_of(names, most_of=max(2, len(names) - 1))
    assert copies, "the checker finds no list at all: it no longer sees the one source"
    outside = {path: lines for path, lines in copies.items() if path not in files}
    assert not outside, f"{change}: a copy of its list outside the files docs/architecture.md names: {outside}"


def test_the_copy_finder_sees_a_copy_in_any_literal(tmp_path, monkeypatch):
    package = tmp_path / "src" / "corrdiff"
    package.mkdir(parents=True)
    (package / "a.py").write_text("X = ('heun', 'euler', 'other')\nY = {'heun': 1, 'euler': 2}\nZ = ['heun']\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert copies_of({"heun", "euler"}, most_of=2) == {"src/corrdiff/a.py": [1, 2]}


def commands() -> dict[str, object]:
    """'data coarsen' -> its click command, for every command a user can run."""
    found, todo = {}, [((), typer.main.get_command(app))]
    while todo:
        path, command = todo.pop()
        if hasattr(command, "commands"):
            todo += [(path + (name,), sub) for name, sub in command.commands.items()]
        else:
            found[" ".join(path)] = command
    return found


def test_every_command_ends_a_users_error_in_one_line_and_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for name, command in commands().items():
        assert getattr(command.callback, "__wrapped__", None) is not None, f"{name}: not wrapped in user_errors"
        assert (command.help or "").strip(), f"corrdiff {name}: no help text"
        assert re.search(rf"corrdiff {re.escape(name)}\b", readme), f"corrdiff {name}: not in the README's usage"


# Commands that write, but only into what they make themselves or a run folder they lock; each with its reason.
WRITE_ONLY_THEIR_OWN = {
    "demo": "makes its own data, run and results in --out; reads nothing of the user's",
    "data demo": "makes the demo dataset in --out; reads nothing",
    "train regression": "writes only <run_dir>/regression/, under its lock (locks.py)",
    "train diffusion": "writes only <run_dir>/diffusion/, under its lock (locks.py)",
    "train distill": "writes only <run_dir>/distill/, under its lock (locks.py)",
}


def test_every_writing_command_is_under_the_output_rule():
    """A command with an --out (or that writes beside its input) is named in the architecture's row of where a
    command may write, which `tests/reliability/test_where_commands_write.py` provokes, or written down above."""
    row = next(line for line in DOC.read_text().splitlines() if line.startswith("| where a command may write |"))
    ruled = set(re.findall(r"`([a-z][a-z -]*)`", row.rsplit("|", 2)[1]))
    writing = {name for name, command in commands().items()
               if any(param.name.startswith("out") for param in command.params)} | {"data stats"}
    by_group = {name for name in writing if name.split()[0] in ruled}  # `baseline` covers baseline rf and interp
    unruled = writing - ruled - by_group - set(WRITE_ONLY_THEIR_OWN)
    assert not unruled, f"commands that write but are not under the output rule: {sorted(unruled)}"


def test_every_checkpoint_field_is_written_and_read():
    """A field of CheckpointMeta without its key in to_json and its keyword in from_json would be lost."""
    written = ast.parse(textwrap.dedent(inspect.getsource(checkpoint.CheckpointMeta.to_json)))
    read = ast.parse(textwrap.dedent(inspect.getsource(checkpoint.CheckpointMeta.from_json)))
    keys = {node.value for node in ast.walk(written) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    keywords = {node.arg for node in ast.walk(read) if isinstance(node, ast.keyword)}
    for field in dataclasses.fields(checkpoint.CheckpointMeta):
        assert field.name in keys, f"CheckpointMeta.{field.name} is not written by to_json"
        assert field.name in keywords, f"CheckpointMeta.{field.name} is not read by from_json"
