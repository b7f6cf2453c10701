"""Kubeflow: `tune:` with `kubernetes.tuner: katib` as a task that creates a Katib Experiment and waits for it.

The Experiment is `modelpress.kubernetes.katib.experiment_manifest`, fixed at compile time: one batch Job per trial
in the tune task's placement (the trials hold the GPUs). The task's pod only waits, in the base image, then writes
the best trial as `best.json` to its `output_hyperparameters`, which train reads like the local tune step's output.
No `from __future__ import annotations` here: KFP reads the component's real annotations.
"""

import functools
import json
from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from modelpress.contract.images import Placement, image_for
from modelpress.contract.workflow import Workflow
from modelpress.kubernetes.katib import experiment_manifest


def tune_katib(
    manifest: str,
    config: str,
    output_hyperparameters: Output[Artifact],
    metrics: Output[Metrics],
    data_uri: Optional[str] = None,  # noqa: UP045 (KFP reads the annotation)
    epochs: Optional[int] = None,  # noqa: UP045
    batch_size: Optional[int] = None,  # noqa: UP045
    data_digest: Optional[str] = None,  # noqa: UP045 (only a key of KFP's cache)
):
    """Create the Experiment, wait for it to succeed, write its best trial. `epochs` and `batch_size` are train's
    run parameters: trials train with tune's settings and search space, as the local tune step does, so they change
    nothing here."""
    import json

    from modelpress.kubernetes.katib import run_experiment
    from modelpress.steps.tune.config import TuneConfig

    result = run_experiment(json.loads(manifest), TuneConfig.model_validate_json(config), output_hyperparameters.path,
                            {"data.path": data_uri})
    metrics.log_metric(f"best_{result['best']['objective']}", result["best"]["score"])


@functools.cache
def katib_component(repository: Optional[str] = None, tag: Optional[str] = None):  # noqa: UP045
    return dsl.component(base_image=image_for("base", repository=repository, tag=tag), install_kfp_package=False)(tune_katib)


def katib_task(workflow: Workflow, config, placement: Placement, arguments: dict):
    """The KFP task for the tune plan task (config: its TuneConfig) whose trials run in `placement`, given the
    arguments of the tune component."""
    manifest = experiment_manifest(workflow, config, placement)
    component = katib_component(workflow.kubernetes.image_repository, workflow.kubernetes.image_tag)
    return component(manifest=json.dumps(manifest), **arguments)
