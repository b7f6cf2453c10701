"""Both adapters run `train.workers > 1` as a training job instead of a single train pod: a Kubeflow Trainer v2
TrainJob by default, a Training Operator TFJob (chief + workers) with `cluster.training_operator: tfjob`."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dags.modelpress_airflow import (
    MODE_ENV,
    WORKFLOWS_ENV,
    LocalStepOperator,
    workflow_dags,
)
from modelpress._core.images import image_for
from modelpress._core.registry import STEPS
from modelpress._core.tfjob import OUTPUT_PLACEHOLDER, with_run_values
from modelpress._core.trainjob import run_training_job
from pipelines.compiler import compile_workflow
from pipelines.components import step_parameters
from pipelines.training_job import train_tfjob


def multi_worker_workflow(adapter_workflow, workers: int, folder: Path | None = None, operator: str = "tfjob") -> Path:
    """The adapter tests' tiny workflow, training with `workers` workers on the given training operator."""
    path = adapter_workflow("mw", targets="[saved_model]", folder=folder)
    spec = yaml.safe_load(path.read_text())
    spec["train"]["workers"] = workers
    spec["cluster"] = {"training_operator": operator}
    path.write_text(yaml.safe_dump(spec))
    return path


def replica_arguments(manifest: dict) -> dict[str, list[str]]:
    return {kind: r["template"]["spec"]["containers"][0]["args"] for kind, r in manifest["spec"]["tfReplicaSpecs"].items()}


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
        assert replica["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert replica["template"]["spec"]["containers"][0]["image"] == image_for("tf", gpu=True)  # the CUDA build
    assert train["inputs"]["parameters"]["epochs"] == {"componentInputParameter": "epochs"}  # the run's value reaches it
    # The launcher only waits: the base image, no GPU, no GPU pool; the replicas hold the GPUs.
    executor = train["componentRef"]["name"].replace("comp-", "exec-")
    container = pipeline["deploymentSpec"]["executors"][executor]["container"]
    assert container["image"] == image_for("base") and "accelerator" not in container.get("resources", {})
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
    assert {p.name for p in parameters} == set(signature.parameters) - {"manifest", "output_model", "metrics", "hyperparameters"}
    body = inspect.getsource(train_tfjob)
    for parameter in parameters:
        assert f'"{parameter.path}": {parameter.name}' in body


def test_both_adapters_default_to_a_trainer_v2_trainjob_with_the_train_tasks_placement(adapter_workflow, tmp_path, monkeypatch):
    pipeline, _ = compiled(adapter_workflow, tmp_path, workers=3, operator="trainer")
    (train,) = [t for t in pipeline["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == "train"]
    in_kfp = json.loads(train["inputs"]["parameters"]["manifest"]["runtimeValue"]["constant"])
    folder = tmp_path / "workflows"
    multi_worker_workflow(adapter_workflow, 3, folder, operator="trainer")
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    in_airflow = workflow_dags()["mw"].get_task("train").op_kwargs["manifest"]
    for manifest in (in_kfp, in_airflow):
        assert (manifest["apiVersion"], manifest["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
        trainer = manifest["spec"]["trainer"]
        assert trainer["numNodes"] == 3 and trainer["image"] == image_for("tf", gpu=True)
        assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert in_kfp["spec"]["runtimePatches"] == in_airflow["spec"]["runtimePatches"]  # same node pool and tolerations


@pytest.fixture
def workflows(tmp_path, monkeypatch, adapter_workflow):
    folder = tmp_path / "workflows"
    multi_worker_workflow(adapter_workflow, 2, folder)
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    return folder


def test_airflow_trains_with_several_workers_through_a_task_that_runs_the_tfjob(workflows):
    dag = workflow_dags()["mw"]
    task = dag.get_task("train")
    assert task.python_callable is run_training_job
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id="train", map_index=-1, try_number=1)
    task.render_template_fields({"params": {"run_root": "s3://runs"}, "dag": dag, "run_id": "manual__1", "ti": ti})
    output = task.op_kwargs["output"]
    assert output == "s3://runs/mw/manual__1/artifacts/train"
    job = with_run_values(task.op_kwargs["manifest"], output, {}, {})  # what the task sends when it runs
    assert {k: r["replicas"] for k, r in job["spec"]["tfReplicaSpecs"].items()} == {"Chief": 1, "Worker": 1}
    for arguments in replica_arguments(job).values():
        assert arguments[arguments.index("--output") + 1] == output and "--overwrite" in arguments
        assert "--result" not in arguments  # no xcom sidecar in a TFJob
    downstream = dag.get_task("validate_train")
    assert "train" in downstream.upstream_task_ids


def test_airflow_local_mode_trains_in_one_process(workflows, monkeypatch):
    monkeypatch.setenv(MODE_ENV, "local")
    assert isinstance(workflow_dags()["mw"].get_task("train"), LocalStepOperator)
