"""The Airflow side of `kubernetes.tuner: katib`: the tune task creates the same Katib Experiment Kubeflow's does and
waits for it; only the run's data reaches the trials from the run's form."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from modelpress.airflow.dag_factory import WORKFLOWS_ENV, workflow_dags
from modelpress.airflow.operators import MODE_ENV, LocalStepOperator, run_katib_tune
from tests.adapter_cases import KATIB_TUNE
from tests.conftest import step_cli

pytestmark = pytest.mark.integration



@pytest.fixture
def katib_workflow(adapter_workflow, tmp_path, monkeypatch):
    folder = tmp_path / "workflows"
    path = adapter_workflow("tk", extra=KATIB_TUNE + "kubernetes: {tuner: katib}\n", folder=folder)
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    return path


def test_the_tune_task_creates_the_experiment_kubeflows_pipeline_creates(katib_workflow, tmp_path):
    result = step_cli("compile", "kfp", str(katib_workflow), "-o", str(tmp_path / "tk.pipeline.yaml"))  # kfp: the main env's
    assert result.returncode == 0, result.stderr
    pipeline, _ = yaml.safe_load_all((tmp_path / "tk.pipeline.yaml").read_text())
    (tune,) = [t for t in pipeline["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == "tune"]
    in_kfp = json.loads(tune["inputs"]["parameters"]["manifest"]["runtimeValue"]["constant"])
    dag = workflow_dags()["tk"]
    task = dag.get_task("tune")
    assert task.python_callable is run_katib_tune
    assert task.op_kwargs["manifest"] == in_kfp
    assert in_kfp["kind"] == "Experiment" and in_kfp["spec"]["maxTrialCount"] == 4
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id="tune", map_index=-1, try_number=1)
    task.render_template_fields({"params": {**dag.params.dump(), "run_root": "s3://runs"}, "dag": dag, "run_id": "manual__1", "ti": ti})
    assert task.op_kwargs["output"] == "s3://runs/tk/manual__1/hyperparameters/tune"
    assert all(value.startswith("data.") for value in task.op_kwargs["overrides"])  # epochs stay tune's, as on Kubeflow
    assert set(dag.get_task("train").upstream_task_ids) == {"tune"}  # train reads the best trial it writes


def test_local_mode_tunes_with_keras_tuner(katib_workflow, monkeypatch):
    monkeypatch.setenv(MODE_ENV, "local")
    assert isinstance(workflow_dags()["tk"].get_task("tune"), LocalStepOperator)
