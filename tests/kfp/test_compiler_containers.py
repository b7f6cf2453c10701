"""The cluster path, run for real: a small workflow's every step in the built images, with exactly the command and
arguments Kubeflow carries, against the moto S3 server on 127.0.0.1: the compiled pipeline runs end to end in
kfp.local's DockerRunner (the IR's command and args in each task's image), train to push, and its release holds the
artifacts, formats and test accuracies that `modelpress run` publishes for the same spec. The Airflow pods: in
tests/airflow/test_airflow_dag_factory_containers.py."""

from __future__ import annotations

import json
import os
import time

import boto3
import pytest

from modelpress.execution.plan import load_workflow
from tests.container_fixtures import release, s3_env, write_spec

pytestmark = [pytest.mark.containers, pytest.mark.xdist_group("containers")]  # one engine: container runs never compete


def test_the_compiled_pipeline_runs_end_to_end_in_kfp_docker_runner(docker, images, gpu_stand_in, s3, s3_endpoint, local_release, shared_dir, monkeypatch):
    from kfp import local
    from kfp.local import docker_task_handler

    containers: list[tuple[str, str, float]] = []  # (step, image, seconds) of each container the runner starts
    run_container = docker_task_handler.run_docker_container

    def timed(*args, **kwargs):
        started = time.monotonic()
        try:
            return run_container(*args, **kwargs)
        finally:
            command = kwargs["command"]
            containers.append((command[command.index("--function_to_execute") + 1], kwargs["image"], time.monotonic() - started))

    monkeypatch.setattr(docker_task_handler, "run_docker_container", timed)

    from modelpress.kfp.compiler import build_pipeline

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
    print(f"\nkfp.local DockerRunner: {time.monotonic() - started:.0f} s")
    print("\n".join(f"{step:<10} {image.rsplit('/', 1)[-1]:<34} {seconds:5.1f} s" for step, image, seconds in containers))
    assert [step for step, _, _ in containers].count("validate") == 5 and {"push", "deploy"} <= {c[0] for c in containers}
    assert release(s3, "registry", "cpath") == local_release
    blessings = [json.loads(p.read_text()) for p in root.glob("*/**/blessing.json")]
    assert len(blessings) == 5 and all(b["blessed"] for b in blessings)
    # Each names its artifact's URI in the pipeline root (kfp.local's is a folder every task mounts), not a copy in
    # the task's own file system
    assert all(b["artifact"].startswith(f"{root}/") for b in blessings), [b["artifact"] for b in blessings]
    boto3.client("s3").head_object(Bucket=s3, Key="serving/cpath/1/saved_model.pb")
