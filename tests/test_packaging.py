"""The wheel ships every package of the source tree: setuptools finds the packages under src/ by their __init__.py,
so a folder of Python code without one would be missing from the installed package and the images."""

from __future__ import annotations

from tests.conftest import ROOT

SOURCE = ROOT / "src" / "modelpress"


def test_every_folder_of_python_code_is_a_package():
    folders = {path.parent for path in SOURCE.rglob("*.py") if "__pycache__" not in path.parts}
    assert len(folders) > 15
    missing = sorted(str(folder.relative_to(ROOT)) for folder in folders if not (folder / "__init__.py").is_file())
    assert not missing, f"folders of Python code without __init__.py (setuptools would leave them out): {missing}"


def test_every_step_folder_has_a_readme():
    from modelpress.steps.catalog import STEPS

    missing = [name for name in STEPS if not (SOURCE / "steps" / name / "README.md").is_file()]
    assert not missing, f"step folders without a README: {missing}"
