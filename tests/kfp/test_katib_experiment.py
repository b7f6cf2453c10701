"""Kubeflow: with `kubernetes.tuner: katib` the tune task creates a Katib Experiment and waits for it (its trials hold
the GPUs); without it tune stays the keras-tuner component."""

from __future__ import annotations

import json

import pytest
import yaml

from modelpress.contract.images import image_for
from modelpress.kfp.compiler import compile_workflow
from tests import crd_schema
from tests.adapter_cases import KATIB_TUNE

pytestmark = pytest.mark.integration



def compiled(adapter_workflow, tmp_path, kubernetes: str) -> tuple[dict, dict]:
    source = adapter_workflow(extra=KATIB_TUNE + kubernetes)
    pipeline, platform = yaml.safe_load_all(compile_workflow(source, tmp_path / "p.yaml").read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def task_named(pipeline: dict, name: str) -> tuple[str, dict]:
    return next((k, t) for k, t in pipeline["root"]["dag"]["tasks"].items() if t["taskInfo"]["name"] == name)


def test_kfp_tunes_through_a_task_that_runs_the_katib_experiment(adapter_workflow, tmp_path):
    pipeline, platform = compiled(adapter_workflow, tmp_path, "kubernetes: {tuner: katib}\n")
    key, tune = task_named(pipeline, "tune")
    assert tune["componentRef"]["name"] == "comp-tune-katib"
    experiment = json.loads(tune["inputs"]["parameters"]["manifest"]["runtimeValue"]["constant"])
    crd_schema.validate(experiment, "kubeflow.org_experiments.json")
    assert experiment["spec"]["maxTrialCount"] == 4 and experiment["spec"]["algorithm"]["algorithmName"] == "random"
    (trial,) = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    assert trial["image"] == image_for("tf", gpu=True) and trial["resources"]["limits"] == {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}
    # The launcher only waits: the base image, no GPU; train reads the best trial it writes.
    executor = tune["componentRef"]["name"].replace("comp-", "exec-")
    assert pipeline["deploymentSpec"]["executors"][executor]["container"]["image"] == image_for("base")
    assert "accelerator" not in pipeline["deploymentSpec"]["executors"][executor]["container"].get("resources", {})
    assert "nodeSelector" not in platform[executor]
    _, train = task_named(pipeline, "train")
    assert train["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"] == {"outputArtifactKey": "output_hyperparameters", "producerTask": key}


def test_kfp_keeps_keras_tuner_by_default(adapter_workflow, tmp_path):
    pipeline, _ = compiled(adapter_workflow, tmp_path, "")
    _, tune = task_named(pipeline, "tune")
    assert tune["componentRef"]["name"] == "comp-tune" and "manifest" not in tune["inputs"].get("parameters", {})
