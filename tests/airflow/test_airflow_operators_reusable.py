"""`modelpress_step` in a team's own DAG and data-aware scheduling: the example DAG of docs/reusable-steps.md loads
with its steps placed as a ModelPress DAG places them and runs end to end in local mode; a wrong config is one line;
a task with an asset as outlet queues a run of the workflow DAG scheduled on it; push declares its release asset."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from modelpress.airflow.dag_factory import WORKFLOWS_ENV, workflow_dags
from modelpress.airflow.operators import MODE_ENV, LocalStepOperator, modelpress_step
from modelpress.common.errors import UserError
from modelpress.contract.images import image_for
from tests.conftest import KUBE_CONFIG, ROOT

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "reusable-steps.md"


@pytest.fixture
def dag_bundle(tmp_path, monkeypatch):
    """A DAGs folder that Airflow's bundle (and so `dag.test()`, which runs only DAGs it has serialized) reads."""
    folder = tmp_path / "dags"
    folder.mkdir()
    bundle = {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {"path": str(folder)}}
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    return folder


def doc_dag(folder, mode: str, monkeypatch):
    """The Airflow example of the doc as a DAG file in `folder`, loaded in `mode` ("kubernetes" or "local")."""
    code = next(block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "modelpress_step" in block)
    (folder / "churn_weekly.py").write_text(code)
    monkeypatch.setenv(MODE_ENV, mode)
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.dags["churn_weekly"]


def test_the_docs_example_runs_each_step_in_its_pod_beside_the_teams_task(dag_bundle, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": KUBE_CONFIG}}))
    dag = doc_dag(dag_bundle, "kubernetes", monkeypatch)
    assert set(dag.task_ids) == {"land_table", "train", "validate"}
    assert dag.get_task("validate").upstream_task_ids == {"train"} and dag.get_task("train").upstream_task_ids == {"land_table"}
    assert not isinstance(dag.get_task("land_table"), KubernetesPodOperator)  # the team's own task stays as it is

    def rendered_pod(task_id: str):
        task = dag.get_task(task_id)
        ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task_id, map_index=-1, try_number=1)
        context = {"params": {"root": "s3://acme-ml/churn"}, "dag": dag, "run_id": "scheduled__2026-01-05", "ti": ti}
        task.render_template_fields(context)
        return task.build_pod_request_obj(context)

    train, validate = dag.get_task("train"), dag.get_task("validate")
    assert isinstance(train, KubernetesPodOperator) and isinstance(validate, KubernetesPodOperator)
    container = rendered_pod("train").spec.containers[0]
    assert container.image == image_for("tf", gpu=True) and container.command == ["modelpress"]
    # train's CPU defaults, the example's memory, one GPU
    assert container.resources.requests == {"cpu": "4", "memory": "12Gi"}
    assert container.resources.limits == {"cpu": "8", "memory": "24Gi", "nvidia.com/gpu": "1"}
    [secret] = container.env_from
    assert (secret.secret_ref.name, secret.secret_ref.optional) == ("modelpress-s3", False)
    args = container.args
    assert args[:2] == ["step", "train"] and args[-2:] == ["--result", "/airflow/xcom/return.json"]
    assert args[args.index("--output") + 1] == "s3://acme-ml/churn/scheduled__2026-01-05/train"  # templated
    config = json.loads(args[args.index("--config") + 1])
    assert config["data"]["path"] == "s3://acme-ml/churn/scheduled__2026-01-05/churn.csv" and config["train"] == {"epochs": 8}

    container = rendered_pod("validate").spec.containers[0]
    assert container.image == image_for("tf") and container.resources.limits == {"cpu": "4", "memory": "8Gi"}
    assert container.args[container.args.index("--input") + 1] == "model=s3://acme-ml/churn/scheduled__2026-01-05/train"
    assert (train.execution_timeout.total_seconds(), validate.execution_timeout.total_seconds()) == (720 * 60, 60 * 60)


@pytest.mark.parametrize(
    "step, config, inputs, message",
    [
        ("train", {"model": {"zoo": "mlp"}, "data": {"source": "digits"}, "train": {"epoch": 5}}, {},
         "modelpress_step('train'): train: unknown key 'epoch'; did you mean 'epochs'?"),
        ("validate", {"name": "churn"}, {"model": "s3://m"}, "modelpress_step('validate'): data: Field required"),
        ("validate", {"name": "churn", "data": {"source": "digits"}}, {"modle": "s3://m"},
         "modelpress_step('validate'): inputs ['modle']: the step takes ['model'], optional ['parent', 'baseline']"),
        ("trian", {}, {}, "unknown step 'trian'; did you mean 'train'?"),
    ],
)  # fmt: skip
def test_a_wrong_step_config_or_input_is_one_line_when_the_dag_is_parsed(step, config, inputs, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        modelpress_step("t", step, config=config, inputs=inputs, output="s3://out")
    assert "\n" not in str(error.value)


def test_the_docs_example_runs_end_to_end_in_local_mode(airflow_db, dag_bundle, tmp_path, monkeypatch):
    dag = doc_dag(dag_bundle, "local", monkeypatch)
    assert isinstance(dag.get_task("train"), LocalStepOperator)
    run = dag.test(run_conf={"root": str(tmp_path / "runs")})

    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == dict.fromkeys(["land_table", "train", "validate"], "success")
    folder = tmp_path / "runs" / run.run_id
    assert (folder / "churn.csv").read_text().startswith("tenure,spend,tickets,churned\n")
    assert json.loads((folder / "train" / "artifact.json").read_text())["step"] == "train"
    blessing = json.loads((folder / "validation" / "blessing.json").read_text())
    assert blessing["blessed"] is True and blessing["artifact"] == str(folder / "train")


PRODUCER = '''
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset

with DAG("land_tables", schedule=None):
    PythonOperator(task_id="land", python_callable=lambda: None, outlets=[Asset("s3://drops/tables/churn.csv")])
'''


def test_a_task_with_the_asset_as_outlet_queues_a_run_of_the_workflow_scheduled_on_it(
    airflow_db, dag_bundle, adapter_workflow, monkeypatch
):
    from airflow.models.asset import AssetEvent
    from airflow.models.dag import DagModel
    from airflow.settings import Session

    (dag_bundle / "land_tables.py").write_text(PRODUCER)
    shutil.copy(ROOT / "dags" / "modelpress_workflows.py", dag_bundle)
    adapter_workflow("churn", folder=dag_bundle / "workflows", extra="asset: s3://drops/tables/churn.csv\n")
    monkeypatch.delenv(WORKFLOWS_ENV, raising=False)  # the DAG file reads the workflows/ beside it
    monkeypatch.setenv(MODE_ENV, "local")
    bag = DagBag(dag_folder=str(dag_bundle))
    assert bag.import_errors == {} and set(bag.dag_ids) == {"land_tables", "churn"}
    assert [asset.uri for asset in bag.dags["churn"].timetable.asset_condition.objects] == ["s3://drops/tables/churn.csv"]

    assert bag.dags["land_tables"].test().state == "success"
    # Airflow 3 has no public Python API to read asset events or what the scheduler will start (the REST API needs
    # an API server), so this reads the metadata DB as the scheduler does.
    with Session() as session:
        # this test's events (the DB is shared with the other tests of this process)
        events = [e for e in session.query(AssetEvent).all() if e.source_dag_id == "land_tables"]
        assert [(e.asset.uri, e.source_dag_id, e.source_task_id) for e in events] == [("s3://drops/tables/churn.csv", "land_tables", "land")]
        _, due = DagModel.dags_needing_dagruns(session)
        assert set(due) == {"churn"}  # the scheduler's next loop creates the asset-triggered run
        session.rollback()  # dags_needing_dagruns locks the rows it returns


def test_push_declares_the_models_releases_as_its_outlet(tmp_path, adapter_workflow, monkeypatch):
    folder = tmp_path / "workflows"
    adapter_workflow("churn", folder=folder, extra="push: {uri: s3://acme/registry, model_name: churn-mlp}\n")
    adapter_workflow("local", folder=folder, extra=f"push: {{uri: {tmp_path / 'registry'}}}\n")
    adapter_workflow("unnamed", folder=folder, extra="push: {}\n")
    monkeypatch.setenv(MODE_ENV, "local")
    dags = workflow_dags(folder)

    assert [asset.uri for asset in dags["churn"].get_task("push").outlets] == ["s3://acme/registry/churn-mlp"]
    assert [asset.uri for asset in dags["local"].get_task("push").outlets] == [f"file://{tmp_path}/registry/local"]
    assert dags["unnamed"].get_task("push").outlets == []  # each run's own registry: nothing stable to schedule on
    assert all(dags["churn"].get_task(t).outlets == [] for t in dags["churn"].task_ids if t != "push")
