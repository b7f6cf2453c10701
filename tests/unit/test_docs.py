"""The README's reference is generated from the code; it must match the code that ships."""

from modelpress._core.docs import END, START, render
from tests.conftest import ROOT


def test_readme_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme
    assert render(readme) == readme, "README reference is stale: run `python -m modelpress._core.docs README.md`"


def test_readme_names_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make demo") < readme.index("## Using it")
    assert readme.index("make test") < readme.index("## Using it")
