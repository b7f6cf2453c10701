"""A run whose gate fails says which layers cost the accuracy: every rejected validation holds sensitivity.json, and
the run report, the orchestrators' report task and a Kubeflow validation's HTML page list the layers worst first; a
blessed validation holds none."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modelpress.execution.runner import report_validations
from modelpress.io.artifacts import SENSITIVITY_FILE, read_blessing
from modelpress.io.report import artifact_rows, html_report
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

WORKFLOW = """\
name: sensitive
model: {zoo: mlp, params: {hidden: [32]}}
data: {source: digits}
train: {epochs: 3, batch_size: 64}
compress:
  - {technique: cluster, clusters: 2, epochs: 0}
targets: [tflite_int8]
gates: {max_drop: 0.0}
evaluation: {latency_runs: 5, warmup_runs: 1, sensitivity_rows: 100}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """train (blessed: max_drop has no baseline for it), cluster to 2 values without fine-tuning and its int8
    conversion (both rejected: they lose accuracy)."""
    root = tmp_path_factory.mktemp("sensitive")
    (root / "workflow.yaml").write_text(WORKFLOW)
    result = run_cli("run", str(root / "workflow.yaml"), "--out", str(root / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def sensitivity(run: Path, name: str) -> dict:
    return json.loads((run / "validation" / name / SENSITIVITY_FILE).read_text())


def test_a_blessed_validation_writes_no_sensitivity(run):
    assert read_blessing(str(run / "validation" / "train"))[0].blessed
    assert not (run / "validation" / "train" / SENSITIVITY_FILE).exists()


@pytest.mark.parametrize("name, technique, parent", [("cluster", "clustering", "train"), ("tflite_int8", "quantization", "cluster")])
def test_a_rejection_measures_each_layer_of_its_parent(run, name, technique, parent):
    assert not read_blessing(str(run / "validation" / name))[0].blessed
    found = sensitivity(run, name)
    assert found["computed"] and found["technique"] == technique and found["parent"]["name"] == parent
    assert found["split"] == "val" and found["rows"] == 100  # the cap: digits has 179 validation rows
    assert {layer["layer"] for layer in found["layers"]} == {"dense_1", "logits"} and found["together"]["layers"] == 2
    own, theirs = (read_blessing(str(run / "validation" / n))[0].metrics["accuracy"] for n in (name, parent))
    assert found["artifact_test_drop"] == pytest.approx(theirs - own)  # what the sample's figures compare with
    drops = [layer["drop"] for layer in found["layers"]]
    assert drops == sorted(drops, reverse=True)
    for layer in found["layers"]:  # a drop is the parent's accuracy on the sample minus the edited one's
        assert layer["drop"] == pytest.approx(found["reference_accuracy"] - layer["accuracy"])
    if technique == "clustering":  # two values per kernel cost accuracy
        assert found["layers"][0]["drop"] > 0.05 and found["together"]["drop"] > 0.05


def markdown_layers(markdown: str, name: str) -> list[str]:
    """The layers report.md's sensitivity table of artifact `name` lists, in order."""
    section = markdown.split("## Per-layer sensitivity", 1)[1]
    block = next(block for block in section.split("\n\n**") if block.startswith(f"{name}**:"))
    return re.findall(r"^\| `(\w+)` \|", block, re.M)


def html_layers(page: str, name: str) -> list[str]:
    """The layers report.html's sensitivity table of artifact `name` lists, in order."""
    section = page.split("<h2>Per-layer sensitivity</h2>", 1)[1]
    table = section[section.index(f"<b>{name}</b>") :].split("</table>", 1)[0]
    return re.findall(r"<td><code>(\w+)</code></td>", table)


def test_run_report_and_report_task_list_the_layers_worst_first(run, tmp_path):
    validations = [str(run / "validation" / name) for name in ("train", "cluster", "tflite_int8")]
    report_validations("sensitive", validations, str(tmp_path / "report"))  # what the KFP and Airflow report tasks run
    for folder in (run, tmp_path / "report"):
        markdown, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
        assert "## Per-layer sensitivity" in markdown and "<h2>Per-layer sensitivity</h2>" in page
        for name in ("cluster", "tflite_int8"):
            worst_first = [layer["layer"] for layer in sensitivity(run, name)["layers"]]
            assert markdown_layers(markdown, name) == worst_first and html_layers(page, name) == worst_first
        sections = markdown.split("## Per-layer sensitivity", 1)[1], page.split("<h2>Per-layer sensitivity</h2>", 1)[1]
        assert "**train**" not in sections[0] and "<b>train</b>" not in sections[1]  # blessed: no per-layer section


def test_a_kubeflow_validation_page_shows_its_sensitivity(run):
    """The HTML artifact each Kubeflow validate task writes (components._component_body) reads the same file."""
    uri = str(run / "validation" / "cluster")
    blessing = read_blessing(uri)[0]
    page = html_report(blessing.name, {"created": ""}, artifact_rows([{**blessing.model_dump(), "validation_uri": uri}], {}, {}), [], "", b"")
    worst = sensitivity(run, "cluster")["layers"][0]
    assert "<h2>Per-layer sensitivity</h2>" in page and f"<td><code>{worst['layer']}</code></td>" in page
