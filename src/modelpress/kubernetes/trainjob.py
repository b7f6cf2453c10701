"""Multi-worker training on Kubeflow Trainer v2: a TrainJob on the ModelPress TensorFlow runtime, built as plain dicts.

The TrainJob runs `train.workers` nodes of the same `modelpress step train ...` command, each with the train task's
placement. Its pod is the one `tfjob.tfjob_manifest` builds for a TFJob replica (image, command, GPU limit, node
selector, tolerations, service account, S3 keys), carried over into the TrainJob's fields: `trainer` (image,
command, args, env, numNodes, resourcesPerNode) and a runtime patch (service account, node selector, tolerations).
The runtime is infra/trainer/tensorflow-runtime.yaml (ClusterTrainingRuntime `modelpress-tensorflow`): it gives each
pod its job name and worker index, from which the TrainJob's TF_CONFIG names every worker; worker 0 is the chief.

`kubernetes.training_operator` picks the kind: `trainer` (this TrainJob, the default) or `tfjob` (Training Operator v1).
The adapters call `training_job_manifest` at compile time and `run_training_job` / `trained_metrics` in the task,
whatever the kind. This module imports neither kfp nor airflow; the kubernetes client only when a job runs.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.kubernetes import tfjob

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "modelpress-tensorflow"  # infra/trainer/tensorflow-runtime.yaml
REPLICATED_JOB = CONTAINER = "node"  # the names Trainer's plugins address the trainer pods and container by
TF_PORT = 2222
# Set by the runtime from the downward API; TF_CONFIG, listed after them, refers to them as $(NAME).
JOB_NAME_VARIABLE, WORKER_INDEX_VARIABLE = "MODELPRESS_TRAINJOB_NAME", "MODELPRESS_WORKER_INDEX"
# A worker's hostname is <job>-node-0-<index>, a DNS label (<= 63): the generated job name stays well below.
NAME_PREFIX_LENGTH = 40
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # what the S3 Secret holds (docs/deployment.md)
PATCH_MANAGER = "modelpress.io/placement"


def tf_config(workers: int) -> str:
    """TF_CONFIG for every worker of a TrainJob, with the job name and the pod's index left as $(VAR) references."""
    host = f"$({JOB_NAME_VARIABLE})-{REPLICATED_JOB}-0-{{index}}.$({JOB_NAME_VARIABLE}):{TF_PORT}"
    cluster = {"worker": [host.format(index=i) for i in range(workers)]}
    # The index is a number in the JSON: the reference stands unquoted and is replaced before TensorFlow reads it.
    placeholder = "<index>"
    text = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": placeholder}}, separators=(",", ":"))
    return text.replace(json.dumps(placeholder), f"$({WORKER_INDEX_VARIABLE})")


def trainjob_manifest(name: str, *, workers: int, placement, arguments: list[str], settings: KubernetesSpec) -> dict[str, Any]:
    """The TrainJob running `modelpress <arguments>` on `workers` nodes in the train task's placement."""
    if workers < 2:
        raise ValueError(f"a TrainJob trains with at least 2 workers, not {workers}; one worker is a plain step pod")
    replica = tfjob.tfjob_manifest(name, workers=workers, placement=placement, arguments=arguments, settings=settings)
    pod = replica["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = [source["secretRef"] for source in container.get("envFrom", []) if "secretRef" in source]
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": key, "optional": secret.get("optional", False)}}}
        for secret in secrets
        for key in S3_KEYS
    ]
    env.append({"name": "TF_CONFIG", "value": tf_config(workers)})
    trainer: dict[str, Any] = {
        "image": container["image"],
        "command": list(container["command"]),
        "args": list(container["args"]),
        "env": env,
        "numNodes": workers,
    }
    if "resources" in container:
        trainer["resourcesPerNode"] = copy.deepcopy(container["resources"])
    pod_patch = {key: copy.deepcopy(pod[key]) for key in ("serviceAccountName", "nodeSelector", "tolerations") if key in pod}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "generateName": re.sub(r"[^a-z0-9-]", "-", name.lower())[:NAME_PREFIX_LENGTH].strip("-") + "-",
            "namespace": replica["metadata"]["namespace"],
            "labels": dict(replica["metadata"]["labels"]),
        },
        "spec": {
            "runtimeRef": {"name": RUNTIME, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {"spec": {"replicatedJobs": [{"name": REPLICATED_JOB, "template": {"spec": {"template": {"spec": pod_patch}}}}]}}
                    },
                }
            ],
        },
    }


def training_job_manifest(name: str, *, workers: int, placement, arguments: list[str], settings: KubernetesSpec) -> dict[str, Any]:
    """What the adapters emit for a train task with `workers` > 1: a TrainJob or a TFJob, as kubernetes.training_operator
    says, running `modelpress <arguments>` (the output as tfjob.OUTPUT_PLACEHOLDER) in `placement`
    (plan.placement(task))."""
    build = trainjob_manifest if settings.training_operator == "trainer" else tfjob.tfjob_manifest
    return build(name, workers=workers, placement=placement, arguments=arguments, settings=settings)


def with_run_values(manifest: dict[str, Any], output: str, overrides: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """The TrainJob with what only the run knows (output URI, parameter values, input URIs), filled in as a TFJob's."""
    manifest = copy.deepcopy(manifest)
    trainer = manifest["spec"]["trainer"]
    trainer["args"] = tfjob.run_arguments(trainer["args"], output, overrides, inputs, "the TrainJob's worker 0 pod")
    return manifest


def trainjob_state(job: dict[str, Any]) -> tuple[str | None, str]:
    """('Complete' | 'Failed' | None while running, the condition's message) from a TrainJob's status."""
    return tfjob.finished(job, "Complete")


def run_trainjob(manifest: dict[str, Any], poll_seconds: float = 15.0, timeout_seconds: float | None = None) -> dict[str, Any]:
    workers = manifest["spec"]["trainer"]["numNodes"]
    return tfjob.run_job(manifest, PLURAL, "Complete", workers, "jobset.sigs.k8s.io/jobset-name", poll_seconds, timeout_seconds)


def run_training_job(manifest: dict[str, Any], output: str, overrides: dict[str, Any] | None = None, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """What the adapters' training tasks call with the manifest `training_job_manifest` made, TrainJob or TFJob."""
    if manifest["kind"] == "TFJob":
        return tfjob.run_training_job(manifest, output, overrides, inputs)
    return {"uri": output, **run_trainjob(with_run_values(manifest, output, overrides or {}, inputs or {}))}


def trained_metrics(manifest: dict[str, Any], output: str) -> dict[str, float]:
    """The numeric metrics of the artifact the job wrote, TrainJob or TFJob."""
    if manifest["kind"] == "TFJob":
        arguments = manifest["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["args"]
    else:
        arguments = manifest["spec"]["trainer"]["args"]
    return tfjob.trained_metrics(arguments, output)
