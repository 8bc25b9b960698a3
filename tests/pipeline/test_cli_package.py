"""The CLI package's structure (DESIGN.md, "Stores and execution"): every module imports on its
own, importing changes nothing, and no project modules import each other in a cycle.

Each import check runs in a fresh ``python -c`` process, so a module is its first import there:
a cycle hidden by whatever a test session imported earlier cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "evaluation", "flows", "pipeline")
#: DESIGN.md's layering: ``pipeline -> flows -> {model, evaluation}``, never the other way.
FORBIDDEN = {
    "evaluation": ("flows", "pipeline"),
    "model": ("flows", "pipeline"),
    "flows": ("pipeline",),
}
CLI_MODULES = ["pipeline.cli"] + [
    f"pipeline.cli.{info.name}"
    for info in pkgutil.iter_modules([str(ROOT / "pipeline" / "cli")])
    if info.name != "__main__"  # runs the CLI when imported: not a module to import
]


def python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter on the project's source tree."""
    environment = {**(env if env is not None else os.environ), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", CLI_MODULES)
def test_every_cli_module_imports_as_the_first_import_of_a_process(module):
    result = python(f"import {module}")
    assert result.returncode == 0, result.stderr


def test_importing_the_cli_changes_no_environment_variable():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE")}
    code = (
        "import importlib, os\n"
        "before = dict(os.environ)\n"
        f"for name in {CLI_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "after = dict(os.environ)\n"
        "changed = sorted(k for k in before | after if before.get(k) != after.get(k))\n"
        "assert not changed, changed\n"
    )
    result = python(code, env)
    assert result.returncode == 0, result.stderr


def test_a_command_sets_the_thread_and_offline_defaults_keeping_the_users(monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    for name, value in (("OMP_NUM_THREADS", None), ("HF_HUB_OFFLINE", "0")):
        monkeypatch.setenv(name, "restored after the test")  # so monkeypatch undoes the command's
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    assert CliRunner().invoke(app, ["version"]).exit_code == 0
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "0"


# --- the import graph of the project ---------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of :data:`PACKAGES` by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module, *, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``tree``.

    ``module_level``: only those that run when the module is imported (module and class
    bodies, ``if``/``try`` blocks), not those inside functions nor under ``TYPE_CHECKING``.
    """
    if not module_level:
        yield from (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
        return
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif isinstance(node, ast.If) and is_type_checking(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def targets(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]
) -> set[str]:
    """The project modules an import statement names.

    ``from X import Y`` names the module ``X.Y`` when there is one, else ``X``; an import of
    ``a.b.c`` names ``a.b.c`` only, not its parent packages (a package importing its own
    submodules in ``__init__`` is the usual layout, not a cycle).
    """
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    package = importer if is_package else importer.rpartition(".")[0]
    if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    found = set()
    for alias in node.names:
        found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    return found & modules


def import_graph(*, module_level: bool) -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = project_modules()
    names = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            target
            for node in imports(tree, module_level=module_level)
            for target in targets(node, name, is_package, names)
            if target != name
        }
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import cycle through ``component`` (a strongly connected component), as a path."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return component  # pragma: no cover - a component of two or more always has a cycle


def test_no_project_modules_import_each_other_in_a_cycle():
    """Module-level imports only (``TYPE_CHECKING`` blocks aside): imports deferred into
    functions are how optional and heavy dependencies stay lazy, and they run after every
    module involved has finished importing."""
    graph = import_graph(module_level=True)
    cycles = [a_cycle(graph, c) for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_run_one_way_pipeline_flows_then_model_and_evaluation():
    """Every import counts here, deferred ones too: a lazy import is still a dependency."""
    graph = import_graph(module_level=False)
    wrong = [
        f"{importer} imports {target}"
        for importer, imported in sorted(graph.items())
        for target in sorted(imported)
        if target.split(".")[0] in FORBIDDEN.get(importer.split(".")[0], ())
    ]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_sees_the_cli_packages_structure():
    """The graph the cycle test checks resolves ``from pipeline.cli import campaign`` to the
    module and finds the CLI's layers: groups import ``common``, only ``app`` imports groups."""
    graph = import_graph(module_level=True)
    groups = {m for m in CLI_MODULES if m not in ("pipeline.cli", "pipeline.cli.app")}
    groups.discard("pipeline.cli.common")
    assert groups <= graph["pipeline.cli.app"]
    assert graph["pipeline.cli"] == {"pipeline.cli.app"}
    assert not any(m.startswith("pipeline.cli") for m in graph["pipeline.cli.common"])
    for group in groups:
        assert {m for m in graph[group] if m.startswith("pipeline.cli")} == {"pipeline.cli.common"}
    importers_of_app = {m for m, imported in graph.items() if "pipeline.cli.app" in imported}
    assert importers_of_app == {"pipeline.cli"}
