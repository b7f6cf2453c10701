"""The cluster path, run for real: a small workflow's every step in the built images, with exactly the command and
arguments the orchestrators carry, against the moto S3 server on 127.0.0.1.

- Airflow: each task's KubernetesPodOperator pod, rendered as the operator sends it to the API server (the dry-run
  pod; a mapped task's pod from its expansion), runs as `docker run` of the pod's image, command and args, as uid
  10001 on a read-only root; its /airflow/xcom/return.json is read back as the XCom sidecar would.
- Kubeflow: the compiled pipeline runs end to end in kfp.local's DockerRunner (the IR's command and args in each
  task's image), train to push.
Both releases hold the artifacts, formats and test accuracies that `modelpress run` publishes for the same spec.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from dags.modelpress_airflow import MODE_ENV, RUN_PREFIX, WORKFLOWS_ENV, workflow_dags
from modelpress._core.spec import load_workflow
from tests.conftest import run_cli
from tests.containers.conftest import docker_run, s3_env

SPEC = """\
name: {name}
model: {{zoo: mlp, params: {{hidden: [32]}}}}
data: {{source: digits}}
train: {{epochs: 5, batch_size: 32, seed: 7}}
compress:
  - {{technique: prune, sparsity: 0.5, epochs: 1}}
targets: [saved_model, tflite_fp32, onnx, openvino_fp32]
gates: {{min_accuracy: 0.6}}
evaluation: {{latency_runs: 5, warmup_runs: 1}}
push: {{uri: "s3://{bucket}/{registry}"}}
serving: {{base_path: "s3://{bucket}/{serving}"}}
"""
# The Kubernetes connection a deployment configures; rendering a pod reads it but never calls an API server.
KUBE_CONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "ml",
    "clusters": [{"name": "ml", "cluster": {"server": "https://kubernetes.invalid:6443"}}],
    "contexts": [{"name": "ml", "context": {"cluster": "ml", "user": "runner"}}],
    "users": [{"name": "runner", "user": {"token": "unused"}}],
}  # fmt: skip


def write_spec(folder: Path, name: str, bucket: str, registry: str, serving: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, bucket=bucket, registry=registry, serving=serving))
    return path


def release(bucket: str, registry: str, model: str) -> dict[str, tuple[str, float]]:
    """The published release's artifacts: name -> (format, test accuracy), from its manifest on S3."""
    client = boto3.client("s3")
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{registry}/{model}/1/manifest.json")["Body"].read())
    return {a["name"]: (a["format"], round(a["metrics"]["accuracy"], 6)) for a in manifest["artifacts"]}


@pytest.fixture(scope="module")
def local_release(s3_endpoint, tmp_path_factory):
    """What `modelpress run` publishes for the spec, on this machine: the reference both orchestrators must match."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_env(s3_endpoint).items():
            patch.setenv(name, value)
        bucket = f"local-{int(time.time() * 1000)}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        folder = tmp_path_factory.mktemp("local")
        started = time.monotonic()
        result = run_cli("run", str(write_spec(folder, "cpath", bucket, "registry", "serving")), "--out", str(folder / "run"))
        assert result.returncode == 0, result.stderr[-3000:]
        print(f"\nmodelpress run: {time.monotonic() - started:.0f} s")
        return release(bucket, "registry", "cpath")


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
            key = task.arguments._key  # MappedArgument internals, as tests/adapters read them
            for index, item in enumerate(task.arguments._input.value):
                arguments = [a.replace(RUN_PREFIX, f"{run_root}/{dag.dag_id}/{run_id}") for a in item[key]]
                run_pod(task.task_id, index, task.image, task.cmds, arguments)
            continue
        ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=1, xcom_pull=xcoms.xcom_pull)
        context = {"params": {"run_root": run_root}, "dag": dag, "run_id": run_id, "ti": ti}
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


def test_the_compiled_pipeline_runs_end_to_end_in_kfp_docker_runner(docker, images, gpu_stand_in, s3, s3_endpoint, local_release, shared_dir):
    from kfp import local

    from pipelines.compiler import build_pipeline

    path = write_spec(shared_dir, "cpath", s3, "registry", "serving")
    root = shared_dir / "pipeline_root"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    # As the kubelet runs a pod: the task's command replaces the image's entrypoint (docker's would prepend it).
    runner = local.DockerRunner(
        entrypoint=[""], user="10001", read_only=True, tmpfs={"/tmp": "exec"}, network_mode="host", environment=s3_env(s3_endpoint)
    )
    local.init(runner=runner, pipeline_root=str(root))
    started = time.monotonic()
    umask = os.umask(0)  # kfp.local makes each run's folders on this side; the tasks (uid 10001) write into them
    try:
        build_pipeline(load_workflow(path))()  # raises when a task fails
    finally:
        os.umask(umask)
    print(f"kfp.local DockerRunner: {time.monotonic() - started:.0f} s")
    assert release(s3, "registry", "cpath") == local_release
    blessings = [json.loads(p.read_text()) for p in root.glob("*/**/blessing.json")]
    assert len(blessings) == 5 and all(b["blessed"] for b in blessings)
    # Each names its artifact's URI in the pipeline root (kfp.local's is a folder every task mounts), not a copy in
    # the task's own file system
    assert all(b["artifact"].startswith(f"{root}/") for b in blessings), [b["artifact"] for b in blessings]
    boto3.client("s3").head_object(Bucket=s3, Key="serving/cpath/1/saved_model.pb")
