"""Multi-worker training on Kubernetes: a Kubeflow Training Operator TFJob, built as plain dicts.

PS-less: one Chief and `train.workers - 1` Workers run the same `modelpress step train ...` command in the train
step's image, each with a GPU. The operator gives every replica its TF_CONFIG; train builds a
MultiWorkerMirroredStrategy from it, and only the chief writes the artifact, so the output must be on object storage
(every replica is its own pod). Both adapters emit this manifest for `train.workers > 1`: Kubeflow as a task that
creates the TFJob and waits for it, Airflow as a Python task doing the same (`run_training_job`).
This module imports neither kfp nor airflow; the kubernetes client (a kfp dependency, so in every image) is
imported only by `run_job`.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.progress import log
from modelpress.contract.images import Placement
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.io import storage
from modelpress.kubernetes.pods import pod_placement, pod_spec
from modelpress.steps.catalog import step_resources

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
CONTAINER = "tensorflow"  # the container the operator adds TF_CONFIG and the replica port to
OUTPUT_PLACEHOLDER = "<modelpress-output>"  # replaced by the run's output URI (known only when the task runs)


def training_workers(step: str, config: Any) -> int:
    """How many workers a plan task trains with: train.workers for the train step, 1 for anything else."""
    return config.train.workers if step == "train" else 1


def tfjob_manifest(name: str, *, workers: int, placement: Placement, arguments: list[str], settings: KubernetesSpec) -> dict[str, Any]:
    """The TFJob running `modelpress <arguments>` on `workers` replicas: Chief x1 + Worker x(workers - 1), each in the
    train task's placement (its image; a GPU, the GPU pool's node selector and tolerations when it has one) with the
    train step's resources (CPU, memory, timeout)."""
    if workers < 2:
        raise ValueError(f"a TFJob trains with at least 2 workers, not {workers}; one worker is a plain step pod")
    where = pod_placement(placement, settings, step_resources("train", settings))
    pod = pod_spec(where, settings, {"name": CONTAINER, "image": where.image, "command": ["modelpress"], "args": list(arguments)})

    def replicas(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "OnFailure", "template": {"spec": copy.deepcopy(pod)}}

    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFJob",
        "metadata": {
            "generateName": re.sub(r"[^a-z0-9-]", "-", name.lower())[:50].strip("-") + "-",  # a run gets a fresh name
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "modelpress", "modelpress.io/step": "train"},
        },
        "spec": {
            # Replicas that are still running when the job ends are removed; the job itself after a day.
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3, "ttlSecondsAfterFinished": 86400}
            | ({"activeDeadlineSeconds": where.timeout_seconds} if where.timeout_seconds else {}),
            "tfReplicaSpecs": {"Chief": replicas(1), "Worker": replicas(workers - 1)},
        },
    }


def with_run_values(manifest: dict[str, Any], output: str, overrides: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """The manifest with what only the run knows: the output URI, pipeline-parameter values (dotted config paths,
    None = keep) and input URIs, in every replica's command."""
    manifest = copy.deepcopy(manifest)
    for replica in manifest["spec"]["tfReplicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        container["args"] = run_arguments(container["args"], output, overrides, inputs, "the TFJob's chief pod")
    return manifest


def run_arguments(arguments: list[str], output: str, overrides: dict[str, Any], inputs: dict[str, str], writer: str) -> list[str]:
    """A compiled training command with the run's output URI, parameter values (as the driver's --set) and inputs.
    `writer`: the pod that writes the output, which therefore must be on object storage."""
    if not storage.is_s3(output):
        raise UserError(
            f"multi-worker training writes from {writer}, so its output must be on object storage, not {output}; "
            "use an s3:// pipeline root (Kubeflow) or run root (Airflow), or set train.workers: 1"
        )
    filled = [output if a == OUTPUT_PLACEHOLDER else a for a in arguments]
    filled += [a for path, value in overrides.items() if value is not None for a in ("--set", f"{path}={json.dumps(value)}")]
    return filled + [a for name, uri in inputs.items() for a in ("--input", f"{name}={uri}")]


def finished(job: dict[str, Any], done: str) -> tuple[str | None, str]:
    """(`done` | 'Failed' | None while running, the condition's message) from a training job's status conditions."""
    for condition in reversed(job.get("status", {}).get("conditions") or []):
        if condition.get("type") in (done, "Failed") and condition.get("status") == "True":
            return condition["type"], condition.get("message", "")
    return None, ""


def job_state(job: dict[str, Any]) -> tuple[str | None, str]:
    """('Succeeded' | 'Failed' | None while running, the condition's message) from a TFJob's status."""
    return finished(job, "Succeeded")


def run_job(manifest: dict[str, Any], plural: str, done: str, workers: int, pod_label: str, poll_seconds: float = 15.0,
            timeout_seconds: float | None = None, unit: str = "workers") -> dict[str, Any]:
    """Create a training job or Experiment (in-cluster credentials, else the kubeconfig) and wait until its `done`
    condition holds; StepFailed if it fails or outlives the timeout. `pod_label` selects its pods' logs; `workers`
    counts its pods, in `unit`."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    kind, (group, version) = manifest["kind"], manifest["apiVersion"].split("/")
    namespace = manifest["metadata"]["namespace"]
    name = api.create_namespaced_custom_object(group, version, namespace, plural, manifest)["metadata"]["name"]
    log(f"{kind} {namespace}/{name}: {workers} {unit}; logs: kubectl -n {namespace} logs -l {pod_label}={name}")
    started = time.monotonic()
    while True:
        state, message = finished(api.get_namespaced_custom_object(group, version, namespace, plural, name), done)
        if state == done:
            log(f"{kind} {namespace}/{name} finished ({done}) after {time.monotonic() - started:.0f}s")
            return {kind.lower(): name, "namespace": namespace, "workers": workers}
        if state == "Failed":
            raise StepFailed(f"{kind} {namespace}/{name} failed: {message or 'no message'}")
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise StepFailed(f"{kind} {namespace}/{name} did not finish within {timeout_seconds:.0f}s")
        time.sleep(poll_seconds)


def run_tfjob(manifest: dict[str, Any], poll_seconds: float = 15.0, timeout_seconds: float | None = None) -> dict[str, Any]:
    workers = sum(r["replicas"] for r in manifest["spec"]["tfReplicaSpecs"].values())
    return run_job(manifest, PLURAL, "Succeeded", workers, "training.kubeflow.org/job-name", poll_seconds, timeout_seconds)


def trained_metrics(arguments: list[str], output: str) -> dict[str, float]:
    """The numeric metrics of the artifact a training job wrote, read with the storage settings of its command's config."""
    from modelpress.contract.schema import StorageSettings
    from modelpress.io.artifacts import read_meta

    storage.configure(StorageSettings.model_validate(json.loads(arguments[arguments.index("--config") + 1]).get("storage", {})))
    metrics = read_meta(output).metrics
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_training_job(manifest: dict[str, Any], output: str, overrides: dict[str, Any] | None = None, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """What the adapters' training tasks call: fill in the run's values, run the TFJob, wait for it."""
    return {"uri": output, **run_tfjob(with_run_values(manifest, output, overrides or {}, inputs or {}))}
