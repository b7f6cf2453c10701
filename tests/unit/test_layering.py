"""The core (components/) never imports an orchestrator: kfp and airflow live only in pipelines/ and dags/."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

ORCHESTRATORS = ("kfp", "airflow")


def orchestrator_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import of kfp or airflow in Python source, including ones inside functions and
    `importlib.import_module("...")` / `__import__("...")` calls with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            modules = [node.args[0].value]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.split(".")[0] in ORCHESTRATORS]
    return found


def test_scanner_finds_every_form_of_orchestrator_import():
    sample = (
        "import os\n"
        "import kfp.dsl\n"
        "from airflow.sdk import DAG\n"
        "def later():\n"
        "    from kfp import compiler\n"
        "    import importlib\n"
        "    importlib.import_module('airflow.providers')\n"
        "from .airflow import helper\n"  # a relative module named airflow is ours, not the orchestrator
        "import kfpx\n"
    )
    assert orchestrator_imports(sample) == [(2, "kfp.dsl"), (3, "airflow.sdk"), (5, "kfp"), (7, "airflow.providers")]


def test_components_import_no_orchestrator():
    sources = sorted((ROOT / "components").rglob("*.py"))
    assert len(sources) > 20  # the scan reads the real package, not an empty folder
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources
        for line, module in orchestrator_imports(Path(path).read_text())
    ]
    assert not offenders, "components/ must not import an orchestrator (use pipelines/ or dags/): " + "; ".join(offenders)
