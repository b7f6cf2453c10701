"""Multi-worker training on Kubeflow Trainer v2 (src/modelpress/kubernetes/trainjob.py and infra/trainer/): the TrainJob and
its runtime against Trainer v2.3's CRD schemas, the TF_CONFIG every worker ends up with, placement, the TFJob
fallback, run-time values and job states."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError

from modelpress.common.errors import UserError
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.kubernetes.tfjob import OUTPUT_PLACEHOLDER, tfjob_manifest
from modelpress.kubernetes.trainjob import (
    RUNTIME,
    trained_metrics,
    training_job_manifest,
    trainjob_manifest,
    trainjob_state,
    with_run_values,
)
from modelpress.ml.training import tf_config_cluster
from tests import crd_schema
from tests.conftest import ROOT
from tests.kubernetes.test_tfjob import COMMAND, TRAIN_PLACEMENT  # the same train replica command

RUNTIME_FILE = ROOT / "infra" / "trainer" / "tensorflow-runtime.yaml"
TRAINJOB_SCHEMA, RUNTIME_SCHEMA = "trainer.kubeflow.org_trainjobs.json", "trainer.kubeflow.org_clustertrainingruntimes.json"
GENERATED_SUFFIX = "x7k2p"  # what the API server appends to generateName (5 characters)


def manifest(workers: int = 3, settings: KubernetesSpec | None = None, name: str = "digits_mlp-train") -> dict:
    return trainjob_manifest(name, workers=workers, placement=TRAIN_PLACEMENT, arguments=COMMAND, settings=settings or KubernetesSpec())


def runtime() -> dict:
    return yaml.safe_load(RUNTIME_FILE.read_text())


def trainer_pod_env(job: dict, job_name: str, index: int) -> dict[str, str]:
    """The environment of worker `index` as Kubernetes gives it: the runtime's env, then the TrainJob's appended
    (Trainer's plain ML policy upserts it into the `node` container), downward-API fields resolved from the pod's
    JobSet label and completion-index annotation, and $(VAR) references to earlier variables expanded."""
    (replicated,) = runtime()["spec"]["template"]["spec"]["replicatedJobs"]
    (container,) = replicated["template"]["spec"]["template"]["spec"]["containers"]
    fields = {
        "metadata.labels['jobset.sigs.k8s.io/jobset-name']": job_name,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
    }
    merged: dict[str, dict] = {}
    for variable in [*container.get("env", []), *job["spec"]["trainer"]["env"]]:
        merged[variable["name"]] = variable
    environment: dict[str, str] = {}
    for name, variable in merged.items():
        if "value" in variable:
            environment[name] = re.sub(r"\$\((\w+)\)", lambda m: environment.get(m.group(1), m.group(0)), variable["value"])
        elif "fieldRef" in variable["valueFrom"]:
            environment[name] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return environment


def test_the_trainjob_runs_every_worker_in_the_train_tasks_placement_on_the_modelpress_runtime():
    job = manifest(workers=3)
    tfjob_pod = tfjob_manifest("digits_mlp-train", workers=3, placement=TRAIN_PLACEMENT, arguments=COMMAND, settings=KubernetesSpec())
    chief = tfjob_pod["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["metadata"]["generateName"] == "digits-mlp-train-" and job["metadata"]["namespace"] == "modelpress"
    assert job["spec"]["runtimeRef"] == {"name": RUNTIME, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"}
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 3
    assert trainer["image"] == chief["containers"][0]["image"] == TRAIN_PLACEMENT.image()
    assert [*trainer["command"], *trainer["args"]] == ["modelpress", *COMMAND]
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}}
    secrets = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in trainer["env"] if "valueFrom" in v}
    # Required: a missing Secret stops every worker at start with "secret not found", not late as "no credentials".
    assert secrets == {key: {"name": "modelpress-s3", "key": key, "optional": False} for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["spec"]["template"]["spec"] == {
        "serviceAccountName": "modelpress-runner",
        "nodeSelector": {"modelpress.io/pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }


def test_a_workflows_cluster_section_reaches_the_trainjob():
    cluster = KubernetesSpec(
        namespace="ml", service_account="trainer", gpu_resource="amd.com/gpu", gpu_node_selector={"pool": "mi300"},
        gpu_tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}], secret_name="keys",
        resources={"train": {"cpu": "8", "memory": "30Gi", "memory_limit": "60Gi"}},
    )  # fmt: skip
    job = manifest(workers=2, settings=cluster)
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "ml"
    assert job["spec"]["trainer"]["resourcesPerNode"] == {"requests": {"cpu": "8", "memory": "30Gi"}, "limits": {"cpu": "8", "memory": "60Gi", "amd.com/gpu": "1"}}
    crd_schema.validate(job, TRAINJOB_SCHEMA)  # requests and limits are where Trainer's schema expects them
    assert pod == {
        "serviceAccountName": "trainer",
        "nodeSelector": {"pool": "mi300"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}],
    }
    assert {v["valueFrom"]["secretKeyRef"]["name"] for v in job["spec"]["trainer"]["env"] if "valueFrom" in v} == {"keys"}


def test_the_trainjob_and_its_runtime_validate_against_the_trainer_crd_schemas():
    crd_schema.validate(manifest(), TRAINJOB_SCHEMA)
    crd_schema.validate(manifest(settings=KubernetesSpec(gpu_tolerations=[], gpu_node_selector={})), TRAINJOB_SCHEMA)
    crd_schema.validate(runtime(), RUNTIME_SCHEMA)
    wrong = manifest()
    wrong["spec"]["trainer"]["numNode"] = 3  # a typo the API server would drop silently
    with pytest.raises(ValidationError, match="numNode"):
        crd_schema.validate(wrong, TRAINJOB_SCHEMA)


def test_names_meet_the_trainjob_rule_and_worker_hostnames_stay_dns_labels():
    job = manifest(name="a-very-long-workflow-name-that-goes-on-and-on-and-on-train", workers=100)
    name = job["metadata"]["generateName"] + GENERATED_SUFFIX
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63  # the CRD's CEL rules on metadata.name
    hosts = json.loads(trainer_pod_env(job, name, 0)["TF_CONFIG"])["cluster"]["worker"]
    assert len(hosts) == 100 and max(len(host.split(".")[0]) for host in hosts) <= 63


def test_every_worker_gets_the_cluster_spec_and_its_own_index():
    job = manifest(workers=3)
    name = job["metadata"]["generateName"] + GENERATED_SUFFIX
    hosts = [f"{name}-node-0-{i}.{name}:2222" for i in range(3)]
    assert runtime()["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"name": "tf-worker", "containerPort": 2222}
    ]
    for index in range(3):
        config = json.loads(trainer_pod_env(job, name, index)["TF_CONFIG"])
        assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_train_reads_that_tf_config_with_worker_0_as_the_chief(index, monkeypatch):
    job = manifest(workers=3)
    monkeypatch.setenv("TF_CONFIG", trainer_pod_env(job, "digits-mlp-train-x7k2p", index)["TF_CONFIG"])
    assert tf_config_cluster() == (3, index == 0, f"worker:{index}")


def test_the_cluster_section_chooses_between_trainjob_and_tfjob():
    def kind(settings: KubernetesSpec) -> str:
        return training_job_manifest("m-train", workers=2, placement=TRAIN_PLACEMENT, arguments=COMMAND, settings=settings)["kind"]

    assert KubernetesSpec().training_operator == "trainer" and kind(KubernetesSpec()) == "TrainJob"
    assert kind(KubernetesSpec(training_operator="tfjob")) == "TFJob"
    with pytest.raises(ValueError, match="training_operator"):
        KubernetesSpec(training_operator="mpijob")


def test_one_worker_is_not_a_trainjob():
    with pytest.raises(ValueError, match="at least 2 workers"):
        manifest(workers=1)


def test_run_values_fill_output_parameters_and_inputs_of_the_trainer():
    template = manifest()
    job = with_run_values(template, "s3://bucket/run/train", {"train.epochs": 7}, {"hyperparameters": "s3://bucket/run/tune"})
    assert template["spec"]["trainer"]["args"] == COMMAND  # the compiled template is not changed
    arguments = job["spec"]["trainer"]["args"]
    assert OUTPUT_PLACEHOLDER not in arguments and arguments[arguments.index("--output") + 1] == "s3://bucket/run/train"
    assert "7" in " ".join(arguments[arguments.index("--config") :])  # the override reaches the command
    assert arguments[-2:] == ["--input", "hyperparameters=s3://bucket/run/tune"]
    crd_schema.validate(job, TRAINJOB_SCHEMA)


def test_a_local_output_is_refused_because_worker_0_writes_from_its_own_pod():
    with pytest.raises(UserError, match="writes from the TrainJob's worker 0 pod, so its output must be on object storage, not /tmp/run/train"):
        with_run_values(manifest(), "/tmp/run/train", {}, {})


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, (None, "")),
        ([{"type": "Suspended", "status": "False"}], (None, "")),
        ([{"type": "Complete", "status": "True", "message": "jobset completed"}], ("Complete", "jobset completed")),
        ([{"type": "Failed", "status": "True", "message": "node-1 exited 1"}], ("Failed", "node-1 exited 1")),
        ([{"type": "Complete", "status": "False"}], (None, "")),
    ],
)
def test_trainjob_state_reads_trainers_conditions(conditions, expected):
    assert trainjob_state({"status": {"conditions": conditions}} if conditions is not None else {}) == expected


def test_worker_0s_metrics_are_read_with_the_storage_settings_of_the_jobs_config(s3, s3_endpoint, monkeypatch):
    from modelpress.io import storage
    from modelpress.io.artifacts import ArtifactMeta

    output = f"s3://{s3}/run/train"
    meta = ArtifactMeta(format="saved_model", step="train", model_path="saved_model", config_hash="0", metrics={"accuracy": 0.91, "params": 2410})
    storage.write_bytes(storage.join(output, "artifact.json"), meta.model_dump_json().encode())
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the config knows where the bucket is
    config = {"storage": {"endpoint_url": s3_endpoint}, "model": {"zoo": "mlp"}, "data": {"source": "digits"}}
    command = ["step", "train", "--config", json.dumps(config), "--output", OUTPUT_PLACEHOLDER]
    job = trainjob_manifest("t", workers=2, placement=TRAIN_PLACEMENT, arguments=command, settings=KubernetesSpec())
    assert trained_metrics(job, output) == {"accuracy": 0.91, "params": 2410}


def test_the_runtime_is_its_own_kustomization_outside_the_base():
    kustomization = yaml.safe_load((RUNTIME_FILE.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [RUNTIME_FILE.name]
    assert "trainer" not in Path(ROOT / "infra" / "base" / "kustomization.yaml").read_text()  # clusters without Trainer apply base
