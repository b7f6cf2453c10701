"""The wheel ships every package of the source tree: pyproject's explicit package list names each folder that holds
Python code (a new step folder not listed there would be missing from the installed package and the images)."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_source_package_is_listed_and_every_listed_one_exists():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}
    roots |= {name: ROOT / name for name in setuptools["packages"] if name.split(".")[0] not in roots}

    def folder_of(package: str):
        top, *rest = package.split(".")
        return roots[top].joinpath(*rest)

    listed = set(setuptools["packages"])
    assert all((folder_of(p) / "__init__.py").is_file() for p in listed), "a listed package has no __init__.py"
    found = {
        ".".join([top, *path.parent.relative_to(roots[top]).parts])
        for top in {p.split(".")[0] for p in listed}
        for path in roots[top].rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but gone: {sorted(listed - found)}"


def test_every_step_folder_has_a_readme():
    from modelpress._core.registry import STEPS

    missing = [name for name in STEPS if not (ROOT / "components" / name / "README.md").is_file()]
    assert not missing, f"step folders without a README: {missing}"
