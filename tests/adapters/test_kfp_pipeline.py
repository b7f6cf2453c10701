"""The Kubeflow adapter: every example compiles and its committed IR is current; the IR carries parameters, GPU
requests, placement, the fan-out and the blessing gate; kfp.local runs a tiny workflow end to end."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import yaml

from modelpress._core.registry import image_for
from modelpress._core.spec import load_workflow
from pipelines.compiler import build_pipeline
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
COMPILED = ROOT / "pipelines" / "compiled"
REFRESH = "refresh with: modelpress compile kfp examples/*.yaml -o pipelines/compiled/"


def read_ir(path: Path) -> tuple[dict, dict]:
    """The pipeline spec and the kubernetes platform spec of a compiled pipeline."""
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def compiled(cli, workflow: Path, folder: Path) -> tuple[dict, dict]:
    """`modelpress compile kfp` as a user runs it, then the IR it wrote."""
    result = cli("compile", "kfp", str(workflow), "-o", str(folder / "p.yaml"))
    assert result.returncode == 0, result.stderr
    return read_ir(folder / "p.yaml")


def parameter_defaults(pipeline: dict) -> dict:
    """The parameters a user sets in the Kubeflow UI, with their defaults (the spec's values)."""
    return {name: p["defaultValue"] for name, p in pipeline["root"]["inputDefinitions"]["parameters"].items()}


def all_dag_tasks(pipeline: dict) -> dict[str, dict]:
    """Every step task in the pipeline (root and nested DAGs: ParallelFor, If) by display name."""
    components = pipeline["components"]
    dags = [pipeline["root"]["dag"], *(c["dag"] for c in components.values() if "dag" in c)]
    tasks = [t for dag in dags for t in dag["tasks"].values()]
    return {t["taskInfo"]["name"]: t for t in tasks if "executorLabel" in components[t["componentRef"]["name"]]}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_compiles_and_committed_pipeline_is_current(example, cli, tmp_path):
    result = cli("compile", "kfp", str(example), "-o", str(tmp_path / "p.yaml"))
    assert result.returncode == 0, result.stderr
    committed = COMPILED / f"{example.stem}.yaml"
    assert committed.exists(), f"{committed} is missing; {REFRESH}"
    assert committed.read_text() == (tmp_path / "p.yaml").read_text(), f"{committed} is stale; {REFRESH}"


def test_no_compiled_pipeline_without_its_example():
    orphans = {p.stem for p in COMPILED.glob("*.yaml")} - {e.stem for e in EXAMPLES}
    assert not orphans, f"pipelines/compiled/ has pipelines of deleted examples: {sorted(orphans)}"


def test_ir_has_parameters_gpu_placement_fan_out_and_blessing_gate(cli, adapter_workflow, tmp_path):
    workflow = adapter_workflow(
        targets="[saved_model, tflite_fp32, onnx]",
        extra="push: {uri: s3://models/registry}\nserving: {base_path: /srv/models}\n"
        "cluster: {gpu_node_selector: {pool: a100}, gpu_tolerations: [{key: gpu, operator: Equal, value: 'yes'}]}\n"
    )
    pipeline, platform = compiled(cli, workflow, tmp_path)
    assert parameter_defaults(pipeline) == {
        "epochs": 5, "min_accuracy": 0.6, "push_uri": "s3://models/registry"
    }  # fmt: skip

    tasks = all_dag_tasks(pipeline)
    assert set(tasks) == {"train", "validate_train", "convert", "validate_convert", "push", "deploy"}
    executors = pipeline["deploymentSpec"]["executors"]

    def executor(name: str) -> str:
        component = pipeline["components"][tasks[name]["componentRef"]["name"]]
        return component["executorLabel"]

    train = executors[executor("train")]["container"]
    assert train["image"] == image_for("tf", gpu=True) and train["image"].endswith("-gpu")  # TF's CUDA build
    accelerator = train["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia-tesla-t4", "1")
    assert platform[executor("train")]["nodeSelector"] == {"labels": {"pool": "a100"}}
    assert platform[executor("train")]["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]
    convert = executors[executor("convert")]["container"]
    assert convert["image"] == image_for("openvino") and "resources" not in convert
    assert "tolerations" not in platform[executor("convert")]
    for container in (executors[executor(name)]["container"] for name in tasks):
        assert "pip install" not in " ".join(container["command"])  # the image carries modelpress

    fan_out = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    items = json.loads(fan_out["parameterIterator"]["items"]["raw"])
    assert [json.loads(item["convert"])["format"] for item in items] == ["tflite_fp32", "onnx"]
    assert [json.loads(item["validate"])["name"] for item in items] == ["tflite_fp32", "onnx"]

    gate = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "triggerPolicy" in t)
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--validate-Output'] == true"
    gated = pipeline["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert [t["taskInfo"]["name"] for t in gated.values()] == ["deploy"]

    assert tasks["train"]["cachingOptions"] == {"enableCache": True}
    assert tasks["validate_convert"]["cachingOptions"] == {"enableCache": True}
    assert tasks["push"]["cachingOptions"] == {} and tasks["deploy"]["cachingOptions"] == {}  # publishing always runs


def test_tensorrt_target_runs_apart_from_the_fan_out_in_its_image_on_the_gpu_pool(cli, adapter_workflow, tmp_path):
    """A fan-out carries one image and one resource request: a TensorRT target's convert and validation are tasks of
    their own, in the tensorrt image with a GPU, read by push like the fanned-out validations."""
    workflow = adapter_workflow(targets="[tflite_int8, tensorrt_fp16]", extra="push: {uri: s3://models/registry}\n")
    pipeline, platform = compiled(cli, workflow, tmp_path)
    tasks = all_dag_tasks(pipeline)
    tensorrt = ("convert_tensorrt_fp16", "validate_convert_tensorrt_fp16")
    assert set(tasks) == {"train", "validate_train", "convert", "validate_convert", *tensorrt, "push"}
    executors = pipeline["deploymentSpec"]["executors"]

    def executor(name: str) -> str:
        return pipeline["components"][tasks[name]["componentRef"]["name"]]["executorLabel"]

    for name in tensorrt:
        container = executors[executor(name)]["container"]
        assert container["image"] == image_for("tensorrt")
        accelerator = container["resources"]["accelerator"]
        assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia-tesla-t4", "1")
        assert platform[executor(name)]["nodeSelector"] == {"labels": {"modelpress.io/pool": "gpu"}}
        assert platform[executor(name)]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert json.loads(tasks["convert_tensorrt_fp16"]["inputs"]["parameters"]["config"]["runtimeValue"]["constant"])["format"] == "tensorrt_fp16"

    # The fan-out keeps the CPU targets, in the convert step's own image and without a GPU.
    fan_out = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert [json.loads(item["convert"])["format"] for item in json.loads(fan_out["parameterIterator"]["items"]["raw"])] == ["tflite_int8"]
    for name in ("convert", "validate_convert"):
        container = executors[executor(name)]["container"]
        assert "resources" not in container and "tolerations" not in platform[executor(name)]
    assert executors[executor("convert")]["container"]["image"] == image_for("openvino")
    assert executors[executor("validate_convert")]["container"]["image"] == image_for("tf")

    names = {key: task["taskInfo"]["name"] for key, task in pipeline["root"]["dag"]["tasks"].items()}
    assert {names[key] for key in tasks["push"]["dependentTasks"]} == {"targets", "validate_train", "validate_convert_tensorrt_fp16"}
    assert set(tasks["push"]["inputs"]["artifacts"]) == {"validations", "validations_1", "validations_2"}


@pytest.fixture
def kfp_local(tmp_path):
    """kfp.local running components as subprocesses of this interpreter's environment."""
    from kfp import local

    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def executor_outputs(root: Path, task: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{task}/executor_output.json"))]


def test_kfp_local_runs_tiny_workflow_to_s3_and_serving(kfp_local, s3, adapter_workflow, tmp_path):
    serving = tmp_path / "serving"
    workflow = adapter_workflow(extra=f"push: {{uri: s3://{s3}/registry}}\nserving: {{base_path: {serving}}}\n")
    build_pipeline(load_workflow(workflow))()  # raises when any task fails

    client = boto3.client("s3")
    manifest = json.loads(client.get_object(Bucket=s3, Key="registry/tiny/1/manifest.json")["Body"].read())
    assert sorted(a["name"] for a in manifest["artifacts"]) == ["tflite_fp32", "train"]  # TensorRT skipped: no GPU
    assert (serving / "tiny" / "1" / "saved_model.pb").exists()

    (validation,) = executor_outputs(kfp_local, "validate")
    assert validation["parameterValues"] == {"Output": True}
    outputs = validation["artifacts"]
    assert outputs["metrics"]["artifacts"][0]["metadata"]["accuracy"] > 0.6
    matrix = outputs["confusion_matrix"]["artifacts"][0]["metadata"]["confusionMatrix"]
    assert len(matrix["rows"]) == 10 and sum(sum(r["row"]) for r in matrix["rows"]) == 359  # the digits test split
    report = Path(outputs["report"]["artifacts"][0]["uri"]).read_text()
    assert "<table>" in report and "train" in report
    (tflite,) = [o["artifacts"]["metrics"]["artifacts"][0]["metadata"] for o in executor_outputs(kfp_local, "for-loop-*/validate-2")]
    assert tflite["accuracy"] > 0.6
    # TensorRT runs apart from the fan-out (validate-3: the third validate task KFP names); its convert skipped, so
    # its validation did
    (tensorrt,) = [o["artifacts"]["metrics"]["artifacts"][0]["metadata"] for o in executor_outputs(kfp_local, "validate-3")]
    assert tensorrt == {"skipped": "its input 'model' was skipped"}


def test_kfp_local_gate_parameter_stops_push_and_deploy(kfp_local, adapter_workflow, tmp_path):
    """A gate set in the UI (pipeline parameter) that the model misses: validation says no, nothing is published."""
    registry, serving = tmp_path / "registry", tmp_path / "serving"
    workflow = adapter_workflow(targets="[saved_model]", extra=f"push: {{uri: {registry}}}\nserving: {{base_path: {serving}}}\n")
    build_pipeline(load_workflow(workflow))(min_accuracy=0.999)

    (validation,) = executor_outputs(kfp_local, "validate")
    assert validation["parameterValues"] == {"Output": False}
    blessing = json.loads(next(kfp_local.glob("*/validate/output_validation/blessing.json")).read_text())
    assert blessing["thresholds"]["min_accuracy"] == 0.999 and "below min_accuracy 0.9990" in blessing["reasons"][0]
    assert not executor_outputs(kfp_local, "*deploy") and not serving.exists()  # dsl.If on the blessing
    (push,) = executor_outputs(kfp_local, "push")
    assert push["artifacts"]["metrics"]["artifacts"][0]["metadata"] == {
        "skipped": "no validation it reads blessed its model; nothing to publish"
    }
    assert not registry.exists()


def test_ui_parameters_cover_data_epochs_compression_gates_and_push(cli, tmp_path):
    workflow = tmp_path / "knobs.yaml"
    workflow.write_text(
        "name: knobs\nmodel: {zoo: mlp}\ndata: {source: csv, path: s3://drops/table.csv, label_column: label}\n"
        "train: {epochs: 7}\ncompress: [{technique: prune, sparsity: 0.7}, {technique: cluster, clusters: 8}]\n"
        "gates: {min_accuracy: 0.9, max_drop: 0.02}\npush: {uri: s3://models/registry}\n"
    )
    pipeline, _ = compiled(cli, workflow, tmp_path)
    assert parameter_defaults(pipeline) == {
        "data_uri": "s3://drops/table.csv", "epochs": 7, "sparsity": 0.7, "clusters": 8,
        "min_accuracy": 0.9, "max_drop": 0.02, "push_uri": "s3://models/registry",
    }  # fmt: skip
    tasks = all_dag_tasks(pipeline)
    assert set(tasks["prune"]["inputs"]["parameters"]) == {"config", "data_uri", "epochs", "sparsity"}
    assert "sparsity" not in tasks["cluster"]["inputs"]["parameters"]  # each task gets only its own knobs
