"""The cluster step operator: a step pod that exits 2 (a user error) fails the task without retries, while any other
failure stays retryable. The pod's outcome is read by the provider's own cleanup, which talks to a stand-in API
server (it labels the finished pod); no cluster is needed."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from modelpress.airflow.dag_factory import WORKFLOWS_ENV, workflow_dags
from modelpress.airflow.operators import MODE_ENV, StepPodOperator

pytestmark = pytest.mark.integration

POD_PATH = "/api/v1/namespaces/modelpress/pods/tiny-train-x7k2p"


class PodApi(BaseHTTPRequestHandler):
    """A stand-in Kubernetes API server holding finished pods (`pods`: path -> manifest): it answers the reads and the
    label patch KubernetesPodOperator sends a finished pod, and records them in `calls`."""

    pods: dict[str, dict] = {}
    calls: list[tuple[str, str]] = []

    def reply(self) -> None:
        self.calls.append((self.command, self.path))
        body = json.dumps(self.pods[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's handler names)
        self.reply()

    def do_PATCH(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply()

    def log_message(self, *args):
        pass


@pytest.fixture
def api_server(monkeypatch):
    """The stand-in API server, as the kubernetes_default connection the operator's hook uses."""
    PodApi.pods, PodApi.calls = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PodApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kube_config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "runner"}}],
        "users": [{"name": "runner", "user": {"token": "unused"}}],
    }  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": kube_config}}))
    yield PodApi
    server.shutdown()
    server.server_close()


@pytest.fixture
def train_task(tmp_path, monkeypatch, adapter_workflow) -> StepPodOperator:
    """The train task of a workflow's DAG in cluster mode, as the DAG factory builds it."""
    folder = tmp_path / "workflows"
    adapter_workflow("tiny", folder=folder, targets="[saved_model]")
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    task = workflow_dags()["tiny"].get_task("train")
    assert isinstance(task, StepPodOperator) and task.retries == 2
    return task


def finished_pod(api_server, exit_code: int) -> k8s.V1Pod:
    """A step pod as the API server reports it once its step container ended with `exit_code`."""
    terminated = k8s.V1ContainerStateTerminated(exit_code=exit_code, reason="Error", message="modelpress: error: ...")
    status = k8s.V1ContainerStatus(
        name="base", image="modelpress-tf", image_id="", ready=False, restart_count=0, state=k8s.V1ContainerState(terminated=terminated)
    )
    pod = k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(name="tiny-train-x7k2p", namespace="modelpress"),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="modelpress-tf")]),
        status=k8s.V1PodStatus(phase="Failed", container_statuses=[status]),
    )
    api_server.pods[POD_PATH] = ApiClient().sanitize_for_serialization(pod)
    return pod


def test_a_step_pod_that_exits_2_fails_the_task_without_retries(api_server, train_task):
    pod = finished_pod(api_server, 2)
    with pytest.raises(AirflowFailException, match="exited with 2, a user error that retrying cannot fix"):
        train_task.cleanup(pod, pod)
    assert ("PATCH", POD_PATH) in api_server.calls  # the provider's own cleanup ran (it marks the pod as checked)


@pytest.mark.parametrize("exit_code", [1, 137], ids=["crash", "oom_killed"])
def test_other_failures_stay_retryable(api_server, train_task, exit_code):
    pod = finished_pod(api_server, exit_code)
    with pytest.raises(AirflowException, match="returned a failure") as failure:
        train_task.cleanup(pod, pod)
    assert not isinstance(failure.value, AirflowFailException)  # Airflow retries it (retries=2, backoff)
