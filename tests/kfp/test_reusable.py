"""`modelpress.kfp.step`: the example of docs/reusable-steps.md compiles, its ModelPress tasks are placed as a
compiled ModelPress pipeline places them, beside the team's own component; a wrong config is one line."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from kfp import compiler

import modelpress.kfp
from modelpress.common.errors import UserError
from modelpress.contract.images import image_for
from tests.conftest import ROOT

pytestmark = pytest.mark.integration  # kfp compiles the example in this process; it is slow for a unit test

DOC = ROOT / "docs" / "reusable-steps.md"


def doc_example(tmp_path):
    """The Python example of the doc, imported as a module (KFP reads a component's source from its file)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "churn_pipeline.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("churn_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_example_compiles_with_the_steps_placement_beside_the_teams_component(tmp_path):
    compiler.Compiler().compile(doc_example(tmp_path).pipeline, str(tmp_path / "churn.yaml"))
    pipeline, platform = yaml.safe_load_all((tmp_path / "churn.yaml").read_text())
    platform = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = pipeline["root"]["dag"]["tasks"]
    assert set(tasks) == {"latest-model", "prune", "validate"}
    executors = pipeline["deploymentSpec"]["executors"]
    prune, validate = executors["exec-prune"]["container"], executors["exec-validate"]["container"]
    assert executors["exec-latest-model"]["container"]["image"] == "python:3.11-slim"
    assert prune["image"] == image_for("tf", gpu=True) and prune["resources"]["accelerator"]["resourceCount"] == "1"
    # prune: the example's memory over the step's defaults (CPU 4 / 8); validate: its step's defaults, no GPU
    assert (prune["resources"]["resourceMemoryRequest"], prune["resources"]["resourceMemoryLimit"]) == ("12Gi", "24Gi")
    assert prune["resources"]["resourceCpuRequest"] == "4" and platform["exec-prune"]["activeDeadlineSeconds"] == str(360 * 60)
    assert validate["image"] == image_for("tf") and "accelerator" not in validate["resources"]
    assert platform["exec-prune"]["nodeSelector"] == {"labels": {"modelpress.io/pool": "gpu"}}
    for executor in ("exec-prune", "exec-validate"):
        (secret,) = platform[executor]["secretAsEnv"]
        assert (secret["secretName"], secret["optional"]) == ("modelpress-s3", False)
    assert "exec-latest-model" not in platform  # the team's own task keeps its own settings
    validate_inputs = tasks["validate"]["inputs"]["artifacts"]
    assert validate_inputs["model"]["taskOutputArtifact"] == {"outputArtifactKey": "output_model", "producerTask": "prune"}
    config = tasks["prune"]["inputs"]["parameters"]["config"]["runtimeValue"]["constant"]
    assert '"sparsity":0.6' in config and '"label_column":"churned"' in config


@pytest.mark.parametrize(
    "name, config, message",
    [
        ("prune", {"data": {"source": "digits"}, "sparsity": "most"}, "modelpress.kfp.step('prune'): sparsity: Input should be a valid number"),
        ("prune", {}, "modelpress.kfp.step('prune'): data: Field required"),
        ("prun", {}, "unknown step 'prun'; did you mean 'prune'?"),
    ],
)
def test_a_wrong_step_or_config_is_one_line(name, config, message):
    with pytest.raises(UserError, match=re.escape(message)):
        modelpress.kfp.step(name, config=config)


# A team's pipeline module (no `from __future__ import annotations`: KFP reads a component's real annotations).
TEAM_PIPELINE = """
from kfp import dsl
from kfp.dsl import Model, Output

import modelpress.kfp

prune = modelpress.kfp.step("prune", config={"data": {"source": "digits"}, "sparsity": 0.5, "epochs": 1})
validate = modelpress.kfp.step("validate", config={"name": "pruned", "data": {"source": "digits"}, "gates": {"min_accuracy": 0.3}})


@dsl.component
def published_model(source: str, model: Output[Model]):
    import shutil

    shutil.copytree(source, model.path)


@dsl.pipeline(name="team-compress")
def pipeline(source: str):
    trained = published_model(source=source)
    pruned = prune(model=trained.outputs["model"])
    validate(model=pruned.outputs["output_model"])
"""


def test_a_teams_pipeline_with_modelpress_steps_runs_in_kfp_local(trained_runs, tmp_path):
    """The doc's shape, run: the team's component hands over a model it has, ModelPress prunes and validates it."""
    from kfp import local

    path = tmp_path / "team_pipeline.py"
    path.write_text(TEAM_PIPELINE)
    spec = importlib.util.spec_from_file_location("team_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    module.pipeline(source=str(trained_runs["a"] / "artifacts" / "train"))  # raises when a task fails
    (blessing,) = root.glob("*/validate/output_validation/blessing.json")
    verdict = yaml.safe_load(blessing.read_text())
    assert verdict["name"] == "pruned" and verdict["blessed"] is True and verdict["metrics"]["accuracy"] >= 0.3
    # validate judged the pruned model, which prune made from the team's
    pruned = yaml.safe_load((Path(verdict["artifact"]) / "artifact.json").read_text())
    assert pruned["step"] == "prune" and pruned["metrics"]["sparsity"] == 0.5 and pruned["parent"].endswith("/published-model/model")
