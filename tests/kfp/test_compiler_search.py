"""The Kubeflow pipeline of a workflow with a search: each rung is its branch of the plan, its first tasks read the
search task before it (so they skip with it, before any training), push reads only the selection and deploy runs
under dsl.If on its blessing."""

from __future__ import annotations

import pytest

from tests.kfp.test_compiler import compiled

pytestmark = pytest.mark.integration

SEARCH = """\
search:
  target: {max_size_ratio: 0.5, format: saved_model}
  ladder:
    - {name: ptq, compress: [{technique: quantize, mode: int8}]}
    - {name: qat, compress: [{technique: quantize, mode: qat}, {technique: quantize, mode: int8}]}
    - {name: pruned, compress: [{technique: prune, sparsity: 0.5}]}
push: {uri: s3://models/registry}
serving: {base_path: s3://models/serving}
"""


def test_every_rung_waits_for_its_search_task_and_only_the_selection_is_published(cli, adapter_workflow, tmp_path):
    pipeline, _ = compiled(cli, adapter_workflow(targets="[saved_model]", extra=SEARCH), tmp_path)
    components = pipeline["components"]
    root = pipeline["root"]["dag"]["tasks"]
    name = {key: task["taskInfo"]["name"] for key, task in root.items()}

    def reads(task: dict) -> dict[str, str]:
        """Input name -> the display name of the root task it reads (a fan-out's by its channel's name)."""
        sources = task.get("inputs", {}).get("artifacts", {})
        return {input_name: name[s["taskOutputArtifact"]["producerTask"]] for input_name, s in sources.items()}

    tasks = {task["taskInfo"]["name"].split(" (")[0]: task for task in root.values()}
    assert {"search_ptq", "search_qat", "search_pruned", "select", "qat-quantize", "pruned-prune", "ptq-targets_tf", "qat-targets_tf"} <= set(tasks)
    assert reads(tasks["qat-quantize"]) == {"model": "train", "after": "search_qat"}
    assert reads(tasks["pruned-prune"]) == {"model": "train", "after": "search_pruned"}
    assert reads(tasks["search_ptq"]) == {"validations_1": "validate_train"}
    # the next decision reads every earlier validation: the first rung's fan-out collected, the second's own
    assert reads(tasks["search_pruned"]) == {
        "validations_1": "validate_train", "validations_2": "validate_qat-quantize",
        "validations_ptq_tf": "ptq-targets_tf", "validations_qat_tf": "qat-targets_tf",
    }  # fmt: skip
    # The PTQ rung is only a conversion of the trained model: its fan-out's convert waits for search_ptq.
    loop = tasks["ptq-targets_tf"]
    assert reads(loop)["pipelinechannel--search-output_search"] == "search_ptq"
    inner = components[loop["componentRef"]["name"]]["dag"]["tasks"]
    convert = next(t for t in inner.values() if t["taskInfo"]["name"].startswith("ptq-convert_tf"))
    assert convert["inputs"]["artifacts"]["after"] == {"componentInputArtifact": "pipelinechannel--search-output_search"}
    assert convert["taskInfo"]["name"] == "ptq-convert_tf (ptq-tflite_int8)"

    assert reads(tasks["push"]) == {"validations_1": "select"}
    assert reads(tasks["report"])["validations_4"] == "select"  # the search table goes into the run report
    gate = next(t for t in root.values() if "triggerPolicy" in t)
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--select-Output'] == true"
    (deploy,) = components[gate["componentRef"]["name"]]["dag"]["tasks"].values()
    assert deploy["taskInfo"]["name"] == "deploy" and set(deploy["inputs"]["artifacts"]) == {"validation", "release"}
    # decisions are a function of their inputs, like models and validations: cached
    assert tasks["search_qat"]["cachingOptions"] == tasks["select"]["cachingOptions"] == {"enableCache": True}
