"""The package graph: no import cycle between corrdiff's modules or its packages, inference and training
independent of each other, and every module in a layer that imports only its own or lower ones (`LAYERS`).
Imports inside functions count: they hide a cycle, they don't break it."""

import ast
from pathlib import Path

import corrdiff

ROOT = Path(corrdiff.__file__).parent


def module_names() -> dict[str, Path]:
    """corrdiff module name -> file, packages by their __init__.py."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ("corrdiff", *path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the corrdiff modules it imports, anywhere in the file (`from corrdiff import x` counts x)."""
    modules = module_names()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            else:
                continue
            # A submodule importing its own package (already being imported) is no cycle: leave such edges out.
            graph[name] |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done, active = set(), []

    def visit(node):
        if node in active:
            return active[active.index(node):] + [node]
        if node in done:
            return None
        active.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        active.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def reachable(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def package_of(module: str) -> str:
    """corrdiff.data.spec -> corrdiff.data; top-level modules (corrdiff.checkpoint) are their own node."""
    return ".".join(module.split(".")[:2])


def test_modules_import_each_other_without_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_packages_import_each_other_without_cycles():
    packages: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        packages.setdefault(package_of(module), set()).update(
            package_of(i) for i in imported if package_of(i) != package_of(module))
    cycle = find_cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_inference_and_training_do_not_depend_on_each_other():
    graph = import_graph()
    for mine, theirs in (("corrdiff.inference", "corrdiff.training"), ("corrdiff.training", "corrdiff.inference")):
        for module in (m for m in graph if package_of(m) == mine):
            reached = sorted(m for m in reachable(graph, module) if package_of(m) == theirs)
            assert not reached, f"{module} depends on {reached}"


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    """The checker itself, on a known case: a -> b at module level, b -> a inside a function."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The layers, lowest first. A module imports only from its own layer or a lower one: the library (core, library)
# never imports an application or the command line. A package is assigned whole; every other module by name, so a
# new top-level module fails `test_every_module_has_a_layer...` until it is given one here.
LAYERS = {
    "core": (
        # the method: networks, diffusion, data
        "corrdiff.models", "corrdiff.diffusion", "corrdiff.data",
        # contracts that training, generation and evaluation share: checkpoints (the schema and reading, their
        # writer, the networks they hold, the optimizer state as tensors), the run config, the ensemble and
        # sampler files, where a command may write, the fast path
        "corrdiff.checkpoint", "corrdiff.checkpoint_writer", "corrdiff.networks", "corrdiff.state_tensors",
        "corrdiff.training_state",
        "corrdiff.config", "corrdiff.ensemble_file", "corrdiff.sampler_file",
        "corrdiff.output_paths", "corrdiff.fast_path",
        # small helpers that import nothing of corrdiff but errors (locks: and distributed)
        "corrdiff.errors", "corrdiff.documents", "corrdiff.seeding", "corrdiff.file_integrity", "corrdiff.progress",
        "corrdiff.distributed", "corrdiff.locks", "corrdiff.arguments", "corrdiff.failed_writes",
    ),
    "library": (
        # the steps of a run, and foreign checkpoints (inference.checks asks interop.physicsnemo about a checkpoint)
        "corrdiff.training", "corrdiff.inference", "corrdiff.evaluation", "corrdiff.interop",
    ),
    "applications": (
        # what runs the steps for a user: experiments (tune, data size), the Python API (which the `corrdiff`
        # package itself exports), the demo
        "corrdiff.experiments", "corrdiff.api", "corrdiff", "corrdiff.demo",
    ),
    "command line": (
        # the `corrdiff` command
        "corrdiff.cli", "corrdiff.__main__",
    ),
}


def layer_of(module: str, layers: dict[str, tuple[str, ...]]) -> int | None:
    """The index of `module`'s layer: its own entry's, else its package's (never the root package's: `corrdiff`
    is a module of its own); None when it has none."""
    rank = {name: i for i, names in enumerate(layers.values()) for name in names}
    parts = module.split(".")
    candidates = [module] + [".".join(parts[:n]) for n in range(len(parts) - 1, 1, -1)]
    return next((rank[name] for name in candidates if name in rank), None)


def layer_violations(graph: dict[str, set[str]], layers: dict[str, tuple[str, ...]]) -> list[str]:
    """One line per module without a layer and per import of a higher layer than the importer's."""
    names = list(layers)
    problems = []
    for module in sorted(graph):
        mine = layer_of(module, layers)
        if mine is None:
            problems.append(f"{module}: no layer; give it one in LAYERS (tests/test_architecture.py)")
            continue
        for imported in sorted(graph[module]):
            theirs = layer_of(imported, layers)
            if theirs is not None and theirs > mine:
                problems.append(f"{module} ({names[mine]}) imports {imported} ({names[theirs]})")
    return problems


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    modules = module_names()
    stale = [name for names in LAYERS.values() for name in names if name not in modules]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"
    problems = layer_violations(import_graph(), LAYERS)
    assert not problems, "\n".join(problems)


def test_the_layer_checker_finds_an_upward_import_and_a_module_without_a_layer():
    """The checker itself, on a known case: a package's modules take its layer, the root package does not pass
    its own on, and an import of a higher layer is named."""
    layers = {"low": ("p.a", "p.pkg"), "high": ("p", "p.b")}
    assert layer_violations({"p.a": set(), "p.pkg.x": {"p.a"}, "p.b": {"p.pkg.x"}, "p": {"p.b"}}, layers) == []
    assert layer_violations({"p.pkg.x": {"p.b"}, "p.b": set()}, layers) == ["p.pkg.x (low) imports p.b (high)"]
    assert layer_violations({"p.c": {"p.a"}, "p.a": set()}, layers) == [
        "p.c: no layer; give it one in LAYERS (tests/test_architecture.py)"]


# The command line imports lazily so that `corrdiff --help` answers at once; the optional demo dependencies
# (jax) are imported only when the demo dataset is built.
LAZY_ALLOWED = ("corrdiff.cli",)
OPTIONAL = {("corrdiff.data", "corrdiff.data.qg_dataset")}


def test_library_modules_import_corrdiff_at_module_level_only():
    """An import inside a function hides a dependency (and used to hide cycles): only the CLI may do it."""
    modules = module_names()
    for name, path in modules.items():
        if name.startswith(LAZY_ALLOWED):
            continue
        tree = ast.parse(path.read_text())
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                target = node.module if isinstance(node, ast.ImportFrom) else \
                    node.names[0].name if isinstance(node, ast.Import) else None
                if target and target.split(".")[0] == "corrdiff" and (name, target) not in OPTIONAL:
                    raise AssertionError(f"{path}:{node.lineno}: {name} imports {target} inside {function.name}()")


# Test folders that do not mirror a package, each with what it holds.
TESTS = ROOT.parents[1] / "tests"
OTHER_TEST_FOLDERS = {
    "reliability": "the rules a user can provoke (bad inputs, kills, full disks, hostile files, where commands "
                   "write), by rule across commands: docs/reliability.md's table points at them",
    "end_to_end": "whole chains through the command line: files to ensemble, the real files, the real-data guide",
    "benchmarks": "the repository's benchmarks/ scripts at toy sizes",
    "scripts": "the repository's scripts/ (study cases)",
}


def test_test_folders_mirror_the_packages():
    packages = {path.name for path in ROOT.iterdir() if (path / "__init__.py").is_file()}
    folders = {path.name for path in TESTS.iterdir() if (path / "__init__.py").is_file()}
    assert packages <= folders, f"packages without a test folder: {sorted(packages - folders)}"
    assert folders - packages <= set(OTHER_TEST_FOLDERS), \
        f"test folders that mirror no package (add them to OTHER_TEST_FOLDERS with what they hold): " \
        f"{sorted(folders - packages - set(OTHER_TEST_FOLDERS))}"
