"""The TFJob for multi-worker training (src/modelpress/kubernetes/tfjob.py): structure, GPUs, replicas, run-time values."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from modelpress.common.errors import UserError
from modelpress.contract.images import image_for
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.kubernetes.tfjob import (
    OUTPUT_PLACEHOLDER,
    job_state,
    tfjob_manifest,
    training_workers,
    with_run_values,
)
from modelpress.steps.catalog import STEPS
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.validate.config import ValidateConfig

CONFIG = json.dumps({"model": {"zoo": "mlp"}, "data": {"source": "digits"}, "train": {"epochs": 3, "workers": 3}})
COMMAND = ["step", "train", "--config", CONFIG, "--output", OUTPUT_PLACEHOLDER, "--overwrite"]
REPLICA_IMAGE = image_for("tf", gpu=True)  # every replica holds a GPU: the CUDA build of the train step's image
TRAIN_PLACEMENT = STEPS["train"].placement


def manifest(workers: int = 3, settings: KubernetesSpec | None = None) -> dict:
    return tfjob_manifest("digits_mlp-train", workers=workers, placement=TRAIN_PLACEMENT, arguments=COMMAND, settings=settings or KubernetesSpec())


def replica_pods(job: dict) -> dict[str, dict]:
    return {kind: spec["template"]["spec"] for kind, spec in job["spec"]["tfReplicaSpecs"].items()}


def test_one_chief_and_the_other_workers_each_with_a_gpu_from_the_cluster_defaults():
    job = manifest(workers=3)
    settings = KubernetesSpec()
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert job["metadata"]["namespace"] == settings.namespace == "modelpress"
    assert job["metadata"]["generateName"] == "digits-mlp-train-"  # a DNS name; each run gets its own
    replicas = job["spec"]["tfReplicaSpecs"]
    assert {kind: r["replicas"] for kind, r in replicas.items()} == {"Chief": 1, "Worker": 2}  # no parameter servers
    assert {r["restartPolicy"] for r in replicas.values()} == {"OnFailure"}
    for pod in replica_pods(job).values():
        (container,) = pod["containers"]
        assert container["name"] == "tensorflow"  # the container the operator gives TF_CONFIG
        assert container["image"] == REPLICA_IMAGE
        assert [*container["command"], *container["args"]] == ["modelpress", *COMMAND]
        # The train step's defaults: requests to be scheduled, CPU and memory limits, a GPU.
        assert container["resources"] == {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}}
        # Required: a missing Secret stops the replica at start with "secret not found".
        assert container["envFrom"] == [{"secretRef": {"name": "modelpress-s3", "optional": False}}]
        assert pod["serviceAccountName"] == "modelpress-runner"
        assert pod["nodeSelector"] == {"modelpress.io/pool": "gpu"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_workflows_cluster_section_reaches_every_replica():
    cluster = KubernetesSpec(
        namespace="ml", service_account="trainer", gpu_resource="amd.com/gpu", gpu_node_selector={"pool": "mi300"},
        gpu_tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}], secret_name="keys",
        resources={"train": {"cpu": "8", "cpu_limit": "16", "memory": "30Gi", "memory_limit": "60Gi", "timeout_minutes": 90}},
    )  # fmt: skip
    job = manifest(workers=2, settings=cluster)
    assert job["metadata"]["namespace"] == "ml" and job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 1
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 90 * 60  # the operator stops a job past the timeout
    for pod in replica_pods(job).values():
        assert pod["containers"][0]["resources"] == {"requests": {"cpu": "8", "memory": "30Gi"}, "limits": {"cpu": "16", "memory": "60Gi", "amd.com/gpu": "1"}}
        assert pod["serviceAccountName"] == "trainer" and pod["nodeSelector"] == {"pool": "mi300"}
        assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}]
        assert pod["containers"][0]["envFrom"][0]["secretRef"]["name"] == "keys"


def test_every_replica_template_is_a_valid_kubernetes_pod():
    for kind, spec in replica_pods(manifest()).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": kind.lower()}, "spec": spec}
        kubernetes_validate.validate(pod, "1.37", strict=True)


def test_one_worker_is_not_a_tfjob():
    with pytest.raises(ValueError, match="at least 2 workers"):
        manifest(workers=1)


def original_config(template: dict) -> dict:
    arguments = replica_pods(template)["Chief"]["containers"][0]["args"]
    return json.loads(arguments[arguments.index("--config") + 1])


def test_run_values_fill_output_parameters_and_inputs_in_every_replica():
    template = manifest()
    original = copy.deepcopy(template)
    job = with_run_values(template, "s3://bucket/run/train", {"train.epochs": 7, "data.path": None}, {"hyperparameters": "s3://bucket/run/tune"})
    assert template == original  # the compiled template is not changed
    for pod in replica_pods(job).values():
        arguments = pod["containers"][0]["args"]
        assert OUTPUT_PLACEHOLDER not in arguments
        assert arguments[arguments.index("--output") + 1] == "s3://bucket/run/train"
        # A run parameter reaches the replica as `--set`, which the task driver applies; None keeps the spec's value.
        assert arguments[-4:] == ["--set", "train.epochs=7", "--input", "hyperparameters=s3://bucket/run/tune"]
        assert json.loads(arguments[arguments.index("--config") + 1]) == original_config(original)
        assert not any(a.startswith("data.path=") for a in arguments)


def test_a_local_output_is_refused_because_the_chief_writes_from_its_own_pod():
    with pytest.raises(UserError, match="must be on object storage, not /tmp/run/train; use an s3:// pipeline root"):
        with_run_values(manifest(), "/tmp/run/train", {}, {})


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, (None, "")),
        ([{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}], (None, "")),
        ([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True", "message": "done"}], ("Succeeded", "done")),
        ([{"type": "Running", "status": "False"}, {"type": "Failed", "status": "True", "message": "chief exited 1"}], ("Failed", "chief exited 1")),
        ([{"type": "Restarting", "status": "True"}, {"type": "Succeeded", "status": "False"}], (None, "")),
    ],
)
def test_job_state_reads_the_operators_conditions(conditions, expected):
    assert job_state({"status": {"conditions": conditions}} if conditions is not None else {}) == expected


def test_only_the_train_step_with_several_workers_is_a_tfjob():
    train = TrainConfig.model_validate({"model": {"zoo": "mlp"}, "data": {"source": "digits"}, "train": {"workers": 4}})
    assert training_workers("train", train) == 4
    assert training_workers("train", train.model_copy(update={"train": train.train.model_copy(update={"workers": 1})})) == 1
    assert training_workers("validate", ValidateConfig.model_validate({"name": "train", "data": {"source": "digits"}})) == 1


def test_the_chiefs_metrics_are_read_with_the_storage_settings_of_the_jobs_config(s3, s3_endpoint, monkeypatch):
    """The launcher reads the artifact.json the chief wrote, at the endpoint the workflow's storage section names."""
    from modelpress.io import storage
    from modelpress.io.artifacts import ArtifactMeta
    from modelpress.kubernetes.trainjob import trained_metrics  # either kind: a TFJob reads its chief's command

    output = f"s3://{s3}/run/train"
    meta = ArtifactMeta(format="saved_model", step="train", model_path="saved_model", config_hash="0", metrics={"accuracy": 0.91, "params": 2410, "ok": True})
    storage.write_bytes(storage.join(output, "artifact.json"), meta.model_dump_json().encode())
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the config knows where the bucket is
    config = {"storage": {"endpoint_url": s3_endpoint}, "model": {"zoo": "mlp"}, "data": {"source": "digits"}}
    command = ["step", "train", "--config", json.dumps(config), "--output", OUTPUT_PLACEHOLDER]
    job = tfjob_manifest("t", workers=2, placement=TRAIN_PLACEMENT, arguments=command, settings=KubernetesSpec())
    assert trained_metrics(job, output) == {"accuracy": 0.91, "params": 2410}
