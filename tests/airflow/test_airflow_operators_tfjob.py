"""The Airflow side of multi-worker training: `train.workers > 1` is a task that creates the training job (a TFJob
with `kubernetes.training_operator: tfjob`) and waits for it, and the TrainJob it creates is the one Kubeflow's does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from modelpress.airflow.dag_factory import WORKFLOWS_ENV, workflow_dags
from modelpress.airflow.operators import MODE_ENV, LocalStepOperator
from modelpress.contract.images import image_for
from modelpress.kubernetes.tfjob import with_run_values
from modelpress.kubernetes.trainjob import run_training_job
from tests.adapter_cases import multi_worker_workflow, replica_arguments
from tests.conftest import step_cli

pytestmark = pytest.mark.integration


def test_both_adapters_default_to_a_trainer_v2_trainjob_with_the_train_tasks_placement(adapter_workflow, tmp_path, monkeypatch):
    source = multi_worker_workflow(adapter_workflow, 3, operator="trainer")
    result = step_cli("compile", "kfp", str(source), "-o", str(tmp_path / "mw.pipeline.yaml"))  # kfp: the main env's
    assert result.returncode == 0, result.stderr
    pipeline, _ = yaml.safe_load_all((tmp_path / "mw.pipeline.yaml").read_text())
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
        assert trainer["resourcesPerNode"] == {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}}
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
    task.render_template_fields({"params": {**dag.params.dump(), "run_root": "s3://runs"}, "dag": dag, "run_id": "manual__1", "ti": ti})
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
