"""The import contract (docs/developing.md): the package's import graph is a DAG of layers.

    common -> contract -> io -> ml -> steps -> kubernetes -> execution -> cli -> kfp | airflow

A module imports only from its own layer or the ones below it; a step never imports another step (what two steps
share moves down to ml/ or io/); kfp and airflow are imported only by their adapters; the Airflow adapter uses
Airflow's public interface only (airflow.sdk, the providers); and no two modules import each other, directly or
around a loop. Imports inside functions count: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "modelpress"
LAYERS = (("common",), ("contract",), ("io",), ("ml",), ("steps",), ("kubernetes",), ("execution",), ("cli",), ("kfp", "airflow"))
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}
ORCHESTRATORS = {"kfp": "kfp", "airflow": "airflow"}  # third-party package -> the one room that may import it
PUBLIC_AIRFLOW = ("airflow.sdk", "airflow.providers.")  # Airflow 3's public interface; the rest may change any release


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the source, relative ones resolved, function-level ones included.
    `from a import b` yields a.b when b is a submodule candidate, and a itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if is_package else module.split(".")[:-1]
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {imported modelpress module: line}, only edges to modules that exist."""
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = {}
        for line, target in imports_of(path.read_text(), name, path.name == "__init__.py"):
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


TOP_LEVEL = {"modelpress": "common", "modelpress.__main__": "cli"}  # the version; `python -m modelpress`


def room(module: str) -> str:
    return TOP_LEVEL.get(module) or module.split(".")[1]


def step_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "steps" else None


def violations(package: Path = PACKAGE) -> list[str]:
    graph = import_graph(package)
    found = []
    for module, edges in graph.items():
        for target, line in edges.items():
            where = f"{module} (line {line}) imports {target}"
            if target == "modelpress":
                continue  # the package root holds only the version
            mine, theirs = room(module), room(target)
            if RANK[theirs] > RANK[mine]:
                found.append(f"{where}: {theirs} is above {mine}")
            elif RANK[theirs] == RANK[mine] and mine != theirs:
                found.append(f"{where}: {mine} and {theirs} are side by side; move what they share down")
            elif step_of(module) and step_of(target) and step_of(module) != step_of(target):
                found.append(f"{where}: a step imports another step; move what they share to ml/ or io/")
    for path in package.rglob("*.py"):
        module = module_name(path, package)
        for line, target in imports_of(path.read_text(), module, path.name == "__init__.py"):
            top = target.split(".")[0]
            if top in ORCHESTRATORS and room(module) != ORCHESTRATORS[top]:
                found.append(f"{module} (line {line}) imports {target}: only modelpress.{ORCHESTRATORS[top]} may")
            elif top == "airflow" and target != "airflow" and not target.startswith(PUBLIC_AIRFLOW):
                found.append(f"{module} (line {line}) imports {target}: not Airflow's public interface (airflow.sdk, providers)")
    return found + [f"import cycle: {' -> '.join([*cycle, cycle[0]])}" for cycle in cycles(graph)]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_room_is_in_a_layer():
    rooms = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert rooms == set(RANK), f"rooms without a layer: {sorted(rooms - set(RANK))}; layers without a room: {sorted(set(RANK) - rooms)}"


def test_the_import_graph_follows_the_layers_and_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 60 and sum(map(len, graph.values())) > 150  # the real package was read
    problems = violations()
    assert not problems, "\n".join(problems)


PLANTED = {
    "upward": ("modelpress/io/storage.py", "from modelpress.execution.plan import build_plan\n", "execution is above io"),
    "lazy upward": ("modelpress/contract/schema.py", "def later():\n    from ..ml import models\n", "ml is above contract"),
    "step to step": ("modelpress/steps/prune/step.py", "from modelpress.steps.train.step import run\n", "a step imports another step"),
    "orchestrator": ("modelpress/steps/push/step.py", "import kfp.dsl\n", "only modelpress.kfp may"),
    "side by side": ("modelpress/kfp/compiler.py", "from modelpress.airflow import dag_factory\n", "side by side"),
    "private airflow": ("modelpress/airflow/operators.py", "from airflow.utils.context import Context\n", "not Airflow's public"),
}


@pytest.mark.parametrize("planted", PLANTED, ids=list(PLANTED))
def test_a_planted_import_is_caught(planted, tmp_path):
    """A copy of the package with one bad import added: the contract names it."""
    import shutil

    copy = tmp_path / "modelpress"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "datasets", "templates"))
    relative, line, expected = PLANTED[planted]
    target = tmp_path / relative
    target.write_text(target.read_text() + "\n" + line)
    problems = violations(copy)
    assert len(problems) >= 1 and any(expected in p for p in problems), problems


def test_a_planted_cycle_is_caught(tmp_path):
    import shutil

    copy = tmp_path / "modelpress"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "datasets", "templates"))
    (copy / "common" / "names.py").write_text((copy / "common" / "names.py").read_text() + "\nfrom modelpress.common import progress\n")
    (copy / "common" / "progress.py").write_text((copy / "common" / "progress.py").read_text() + "\nfrom modelpress.common import names\n")
    assert "import cycle: modelpress.common.names -> modelpress.common.progress -> modelpress.common.names" in violations(copy)
