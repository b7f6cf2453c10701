"""The Airflow cluster path, run for real: a small workflow's every task as its KubernetesPodOperator pod, rendered as
the operator sends it to the API server (the dry-run pod; a mapped task's pod from its expansion), runs as `docker
run` of the pod's image, command and args, as uid 10001 on a read-only root, against the moto S3 server on
127.0.0.1; its /airflow/xcom/return.json is read back as the XCom sidecar would. The release holds the artifacts,
formats and test accuracies that `modelpress run` publishes for the same spec (test_cluster_path.py: Kubeflow's)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import boto3
import pytest

from modelpress.airflow.dag_factory import WORKFLOWS_ENV, workflow_dags
from modelpress.airflow.operators import MODE_ENV
from tests.conftest import KUBE_CONFIG
from tests.container_fixtures import docker_run, release, s3_env, write_spec

pytestmark = [pytest.mark.containers, pytest.mark.xdist_group("containers")]  # one engine: container runs never compete


class XComs:
    """The XCom values of the tasks run so far, as Airflow's task instance hands them to an operator."""

    def __init__(self):
        self.values: dict[tuple[str, int | None], dict] = {}

    def xcom_pull(self, task_ids: str, map_indexes: int | None = None):
        return self.values.get((task_ids, map_indexes))


def test_airflow_pods_run_every_step_in_their_images(docker, images, gpu_stand_in, s3, s3_endpoint, local_release, tmp_path, monkeypatch, shared_dir):
    folder = tmp_path / "workflows"
    folder.mkdir()
    write_spec(folder, "cpath", s3, "registry", "serving")
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)  # cluster mode: KubernetesPodOperator
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": KUBE_CONFIG}}))
    dag = workflow_dags()["cpath"]
    run_id, run_root = "scheduled__2026-11-23T03:00:00+00:00", f"s3://{s3}/runs"
    params = {**dag.params.dump(), "run_root": run_root}  # the triggered run's form: the spec's values
    xcoms = XComs()
    ran: list[tuple[str, str, float]] = []

    def run_pod(task_id: str, index: int | None, image: str, command: list[str], arguments: list[str]) -> None:
        xcom = shared_dir / f"{task_id}-{index}"
        xcom.mkdir(mode=0o777)
        xcom.chmod(0o777)
        started = time.monotonic()
        done = docker_run(docker, image, arguments, entrypoint=command[0], env=s3_env(s3_endpoint), volumes={str(xcom): "/airflow/xcom"})
        assert done.returncode == 0, f"{task_id}[{index}] in {image}: {done.stderr[-3000:]}"
        xcoms.values[(task_id, index)] = json.loads((xcom / "return.json").read_text())  # what the sidecar hands Airflow
        ran.append((f"{task_id}" + ("" if index is None else f"[{index}]"), image.rsplit("/", 1)[-1], time.monotonic() - started))

    for task in dag.topological_sort():
        if task.task_type == "ShortCircuitOperator":  # the blessing gate before deploy, on the XCom of its validation
            assert task.python_callable(xcoms, **task.op_kwargs) is True
            continue
        if not isinstance(task.arguments, list):  # in a targets' mapped group: one pod per target, from its expansion
            key = task.arguments._key  # MappedArgument internals, as the Airflow tests read them
            for index, item in enumerate(task.arguments._input.value):
                arguments = task.render_template(item[key], {"params": params, "dag": dag, "run_id": run_id})
                run_pod(task.task_id, index, task.image, task.cmds, arguments)
            continue
        ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=1, xcom_pull=xcoms.xcom_pull)
        context = {"params": params, "dag": dag, "run_id": run_id, "ti": ti}
        task.render_template_fields(context)
        pod = task.build_pod_request_obj(context)  # the pod the operator would create
        container = pod.spec.containers[0]
        assert pod.spec.containers[1].name == "airflow-xcom-sidecar"
        assert [e.secret_ref.name for e in container.env_from] == ["modelpress-s3"]  # its values: s3_env here
        run_pod(task.task_id, None, container.image, container.command, container.args)

    print("\n".join(f"{name:<28} {image:<36} {seconds:5.1f} s" for name, image, seconds in ran))
    assert {image.split(":")[0] for _, image, _ in ran} == {"modelpress-tf", "modelpress-openvino", "modelpress-base"}
    assert xcoms.values[("push", None)]["version"] == 1
    assert release(s3, "registry", "cpath") == local_release
    deployed = xcoms.values[("deploy", None)]
    assert deployed["version"] == 1
    boto3.client("s3").head_object(Bucket=s3, Key="serving/cpath/1/saved_model.pb")
