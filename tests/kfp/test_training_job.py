"""Both adapters run `train.workers > 1` as a training job instead of a single train pod: a Kubeflow Trainer v2
TrainJob by default, a Training Operator TFJob (chief + workers) with `kubernetes.training_operator: tfjob`. Here the
Kubeflow side; tests/airflow/test_airflow_operators_tfjob.py the Airflow side and that both emit the same TrainJob."""

from __future__ import annotations

import inspect
import json

import pytest
import yaml

from modelpress.contract.images import image_for
from modelpress.kfp.compiler import compile_workflow
from modelpress.kfp.components import step_parameters
from modelpress.kfp.training_job import train_tfjob
from modelpress.kubernetes.tfjob import OUTPUT_PLACEHOLDER
from modelpress.steps.catalog import STEPS
from tests.adapter_cases import multi_worker_workflow, replica_arguments

pytestmark = pytest.mark.integration


def compiled(adapter_workflow, tmp_path, workers: int, operator: str = "tfjob") -> tuple[dict, dict]:
    source = multi_worker_workflow(adapter_workflow, workers, operator=operator)
    pipeline, platform = yaml.safe_load_all(compile_workflow(source, tmp_path / "mw.pipeline.yaml").read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_kfp_trains_with_several_workers_through_a_task_that_runs_the_tfjob(adapter_workflow, tmp_path):
    pipeline, platform = compiled(adapter_workflow, tmp_path, workers=3)
    tasks = pipeline["root"]["dag"]["tasks"]
    (key,) = [k for k, t in tasks.items() if t["taskInfo"]["name"] == "train"]
    train = tasks[key]
    assert train["componentRef"]["name"] == "comp-train-tfjob"
    manifest = json.loads(train["inputs"]["parameters"]["manifest"]["runtimeValue"]["constant"])
    assert manifest["kind"] == "TFJob" and {k: r["replicas"] for k, r in manifest["spec"]["tfReplicaSpecs"].items()} == {"Chief": 1, "Worker": 2}
    for arguments in replica_arguments(manifest).values():
        assert arguments[:2] == ["step", "train"] and arguments[arguments.index("--output") + 1] == OUTPUT_PLACEHOLDER
        assert json.loads(arguments[arguments.index("--config") + 1])["train"]["workers"] == 3
    for replica in manifest["spec"]["tfReplicaSpecs"].values():
        assert replica["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}
        assert replica["template"]["spec"]["containers"][0]["image"] == image_for("tf", gpu=True)  # the CUDA build
    assert train["inputs"]["parameters"]["epochs"] == {"componentInputParameter": "epochs"}  # the run's value reaches it
    # The launcher only waits: the base image, no GPU, no GPU pool; the replicas hold the GPUs.
    executor = train["componentRef"]["name"].replace("comp-", "exec-")
    container = pipeline["deploymentSpec"]["executors"][executor]["container"]
    assert container["image"] == image_for("base") and "accelerator" not in container.get("resources", {})
    assert (container["resources"]["resourceCpuRequest"], container["resources"]["resourceMemoryLimit"]) == ("100m", "1Gi")
    assert platform[executor]["activeDeadlineSeconds"] == str(720 * 60)  # the train step's time: it waits for the job
    assert "nodeSelector" not in platform[executor] and "tolerations" not in platform[executor]
    assert platform[executor]["secretAsEnv"][0]["secretName"] == "modelpress-s3"
    validate = next(t for t in tasks.values() if t["taskInfo"]["name"] == "validate_train")
    assert validate["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {"outputArtifactKey": "output_model", "producerTask": key}


def test_kfp_keeps_one_worker_training_as_the_train_component(adapter_workflow, tmp_path):
    pipeline, _ = compiled(adapter_workflow, tmp_path, workers=1)
    train = next(t for t in pipeline["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == "train")
    assert train["componentRef"]["name"] == "comp-train"
    assert pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]["count"] == "1"


def test_the_tfjob_task_takes_every_pipeline_parameter_train_has():
    """Its signature is written by hand: a parameter added for train's config must be added there too."""
    signature = inspect.signature(train_tfjob)
    parameters = step_parameters(STEPS["train"])
    assert {p.name for p in parameters} == set(signature.parameters) - {"manifest", "output_model", "metrics", "hyperparameters", "data_digest"}
    body = inspect.getsource(train_tfjob)
    for parameter in parameters:
        assert f'"{parameter.path}": {parameter.name}' in body
