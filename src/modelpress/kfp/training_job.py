"""Kubeflow: multi-worker training (`train.workers > 1`) as a task that creates a training job and waits for it.

The manifest is `modelpress.kubernetes.trainjob.training_job_manifest` (a Kubeflow Trainer v2 TrainJob, or a Training
Operator TFJob with `kubernetes.training_operator: tfjob`; a GPU per worker), fixed at compile time with a
placeholder where the run's output goes: the task's output artifact URI, which must be on S3 (s3:// pipeline root)
because the chief writes it from its own pod. The task's pod only waits, in the base image; downstream tasks read
its `output_model` like any train output. Pipeline parameters for train (data_uri, epochs, batch_size) reach every replica.
No `from __future__ import annotations` here: KFP reads the component's real annotations.
"""

import functools
import json
from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from modelpress.contract.images import Placement, image_for
from modelpress.contract.workflow import Workflow
from modelpress.kubernetes.tfjob import OUTPUT_PLACEHOLDER
from modelpress.kubernetes.trainjob import training_job_manifest


def train_tfjob(
    manifest: str,
    output_model: Output[Model],
    metrics: Output[Metrics],
    hyperparameters: Input[Artifact] = None,
    data_uri: Optional[str] = None,  # noqa: UP045 (KFP reads the annotation)
    epochs: Optional[int] = None,  # noqa: UP045
    batch_size: Optional[int] = None,  # noqa: UP045
    data_digest: Optional[str] = None,  # noqa: UP045 (only a key of KFP's cache)
):
    """Multi-worker training: create the TFJob, wait for it to succeed, publish the chief's metrics."""
    import json
    import os

    from modelpress.kubernetes.trainjob import run_training_job, trained_metrics

    inputs = {"hyperparameters": hyperparameters.uri} if hyperparameters is not None else {}
    job = json.loads(manifest)
    run_training_job(job, output_model.uri, {"data.path": data_uri, "train.epochs": epochs, "train.batch_size": batch_size}, inputs)
    os.makedirs(output_model.path, exist_ok=True)  # the chief wrote the artifact to the URI: nothing to upload
    for key, value in trained_metrics(job, output_model.uri).items():
        metrics.log_metric(key, value)


@functools.cache
def training_job_component(repository: Optional[str] = None, tag: Optional[str] = None):  # noqa: UP045
    return dsl.component(base_image=image_for("base", repository=repository, tag=tag), install_kfp_package=False)(train_tfjob)


def training_job_task(workflow: Workflow, workers: int, placement: Placement, arguments: dict):
    """The KFP task for a train plan task with `workers` > 1, whose replicas run in `placement` (the train task's),
    given the arguments of the train component."""
    command = ["step", "train", "--config", arguments["config"], "--output", OUTPUT_PLACEHOLDER, "--overwrite"]
    manifest = training_job_manifest(f"{workflow.name}-train", workers=workers, placement=placement, arguments=command, settings=workflow.kubernetes)
    component = training_job_component(workflow.kubernetes.image_repository, workflow.kubernetes.image_tag)
    return component(manifest=json.dumps(manifest), **{name: value for name, value in arguments.items() if name != "config"})
