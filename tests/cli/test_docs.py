"""The README's reference is generated from the code; it must match the code that ships."""

import re

import pytest
import yaml

from modelpress.cli.docs import END, START, render
from modelpress.execution.plan import build_plan, load_workflow
from tests.conftest import ROOT


def test_readme_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme
    assert render(readme) == readme, "README reference is stale: run `python -m modelpress.cli.docs README.md`"


def test_readme_names_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make demo") < readme.index("## Using it")
    assert readme.index("make test") < readme.index("## Using it")


def documented_workflows() -> list[tuple[str, str]]:
    """Every ```yaml block in the README and docs/ that is a whole workflow (it has name, model and data)."""
    blocks = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S), start=1):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and {"name", "model", "data"} <= data.keys():
                blocks.append((f"{page.name} block {number}", block))
    return blocks


@pytest.mark.parametrize("where, block", documented_workflows(), ids=lambda value: value if " block " in value else "")
def test_documented_workflows_are_valid_and_plan(where, block, tmp_path):
    path = tmp_path / "workflow.yaml"
    path.write_text(block)
    assert build_plan(load_workflow(path)), where


def test_the_readme_documents_at_least_two_workflows():
    assert len([w for w in documented_workflows() if w[0].startswith("README")]) >= 2
