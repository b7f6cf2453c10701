"""tune: on Katib (src/modelpress/kubernetes/katib.py): Experiments for each algorithm against Katib v0.19's
Experiment schema and the webhook rules it checks in Go, the mapping of each kind of search entry, the trial command
as Katib's StdOut collector runs it, the best trial as best.json, and the one-line refusals."""

from __future__ import annotations

import json
import math
import re
import shlex

import pytest

from modelpress.common.errors import StepFailed, UserError
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.contract.workflow import Workflow
from modelpress.execution.driver import parse_config
from modelpress.kubernetes.katib import best_trial_hyperparameters, experiment_manifest, with_run_values
from modelpress.steps.catalog import STEPS
from modelpress.steps.tune.config import TuneConfig
from tests import crd_schema

SCHEMA = "kubeflow.org_experiments.json"
SPACE = {
    "learning_rate": {"min": 1.0e-4, "max": 1.0e-2, "sampling": "log"},
    "batch_size": {"min": 16, "max": 64, "step": 16},
    "optimizer": ["adam", "sgd"],
    "model.params.hidden": [[32], [64, 32]],
    "model.params.dropout": {"min": 0.0, "max": 0.5},
}
# Katib's default StdOut filter (pkg/metricscollector/v1beta1/common/const.go DefaultFilter)
KATIB_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


def manifest(tune: dict, kubernetes: dict | None = None) -> dict:
    config = TuneConfig.model_validate({"model": {"zoo": "mlp"}, "data": {"source": "digits"}, "train": {"epochs": 9}, "tune": tune})
    workflow = Workflow.model_validate({"name": "digits-mlp", "model": {"zoo": "mlp"}, "data": {"source": "digits"},
                                        "tune": tune, "kubernetes": kubernetes or {}})
    return experiment_manifest(workflow, config, STEPS["tune"].placement)


def check_webhook_rules(experiment: dict) -> None:
    """What Katib's validating webhook checks in Go (pkg/webhook/v1beta1/experiment/validator/validator.go) and its
    hyperband service (pkg/suggestion/v1beta1/hyperband/service.py) for the fields we emit."""
    spec = experiment["spec"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?-", experiment["metadata"]["generateName"])
    assert len(experiment["metadata"]["generateName"]) + 5 <= 40
    assert spec["objective"]["type"] in ("maximize", "minimize")
    assert spec["objective"]["objectiveMetricName"] not in spec["objective"]["additionalMetricNames"]
    assert spec["algorithm"]["algorithmName"] in ("random", "bayesianoptimization", "hyperband", "grid", "tpe", "cmaes")
    assert 0 < spec["parallelTrialCount"] <= spec["maxTrialCount"] and 0 <= spec["maxFailedTrialCount"] <= spec["maxTrialCount"]
    names = [p["name"] for p in spec["parameters"]]
    for parameter in spec["parameters"]:
        space = parameter["feasibleSpace"]
        assert parameter["parameterType"] in ("double", "int", "categorical")
        assert space.get("distribution", "uniform") in ("uniform", "logUniform")
        if parameter["parameterType"] == "categorical":
            assert space["list"] and not {"min", "max", "step"} & space.keys()
        else:
            assert "list" not in space and float(space["min"]) < float(space["max"])
    template = spec["trialTemplate"]
    assert template["primaryContainerName"] and template["successCondition"] and template["failureCondition"]
    (container,) = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == template["primaryContainerName"]
    for parameter in template["trialParameters"]:
        assert parameter["reference"] in names and f"${{trialParameters.{parameter['name']}}}" in container["args"][0]
    settings = {s["name"]: s["value"] for s in spec["algorithm"]["algorithmSettings"]}
    if spec["algorithm"]["algorithmName"] == "hyperband":
        assert settings["resource_name"] in names and float(settings["r_l"]) > 0
        eta = int(settings["eta"])
        assert spec["parallelTrialCount"] >= math.ceil(eta ** int(math.log(float(settings["r_l"])) / math.log(eta)))


@pytest.mark.parametrize("tune", [
    {"algorithm": "random", "max_trials": 6, "space": SPACE},
    {"algorithm": "bayesian", "max_trials": 2, "space": SPACE},
    {"algorithm": "hyperband", "epochs": 9, "factor": 3, "space": SPACE},
], ids=["random", "bayesian", "hyperband"])
def test_each_algorithm_gives_an_experiment_katib_accepts(tune):
    experiment = manifest(tune)
    crd_schema.validate(experiment, SCHEMA)
    check_webhook_rules(experiment)
    algorithm = experiment["spec"]["algorithm"]["algorithmName"]
    assert algorithm == {"random": "random", "bayesian": "bayesianoptimization", "hyperband": "hyperband"}[tune["algorithm"]]


def test_counts_come_from_the_spec_and_fail_only_when_no_trial_completes():
    spec = manifest({"algorithm": "bayesian", "max_trials": 6, "space": SPACE}, {"parallel_trials": 2})["spec"]
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (6, 2, 6)
    assert manifest({"max_trials": 2, "space": SPACE})["spec"]["parallelTrialCount"] == 2  # never more than the trials


def test_hyperband_searches_epochs_as_its_resource_with_the_spec_factor():
    spec = manifest({"algorithm": "hyperband", "epochs": 9, "factor": 3, "space": SPACE}, {"parallel_trials": 1})["spec"]
    settings = {s["name"]: s["value"] for s in spec["algorithm"]["algorithmSettings"]}
    assert settings == {"resource_name": "epochs", "eta": "3", "r_l": "9"}
    assert spec["parameters"][-1] == {"name": "epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9"}}
    # R = 9, eta = 3: brackets of 9 (+3+1), 5 (+2) and 3 trials; the first runs 9 at once.
    assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (23, 9)
    assert "'train.epochs=${trialParameters.epochs}'" in spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_each_kind_of_search_entry_maps_to_its_katib_parameter():
    parameters = {p["name"]: p for p in manifest({"space": SPACE})["spec"]["parameters"]}
    assert parameters["learning_rate"] == {"name": "learning_rate", "parameterType": "double",
                                           "feasibleSpace": {"min": "0.0001", "max": "0.01", "distribution": "logUniform"}}
    assert parameters["batch_size"]["parameterType"] == "int"
    assert parameters["batch_size"]["feasibleSpace"] == {"min": "16", "max": "64", "step": "16"}
    assert parameters["model.params.dropout"] == {"name": "model.params.dropout", "parameterType": "double",
                                                  "feasibleSpace": {"min": "0.0", "max": "0.5"}}
    assert parameters["optimizer"]["feasibleSpace"] == {"list": ['"adam"', '"sgd"']}
    assert parameters["model.params.hidden"] == {"name": "model.params.hidden", "parameterType": "categorical",
                                                 "feasibleSpace": {"list": ["[32]", "[64,32]"]}}


def trial_config(experiment: dict, assignments: dict[str, str]) -> tuple[object, list[str]]:
    """The config the trial's train step gets: Katib's substitution, its StdOut wrapping, the shell's word
    splitting, then the CLI's --set parsing and the driver's overrides."""
    template = experiment["spec"]["trialTemplate"]
    (container,) = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    line = container["args"][0]
    for parameter in template["trialParameters"]:
        line = line.replace(f"${{trialParameters.{parameter['name']}}}", assignments[parameter["reference"]])
    assert container["command"] == ["sh", "-c"]
    words = shlex.split(f"{line} 1>/var/log/katib/metrics.log 2>&1 && echo completed > /var/log/katib/$$$$.pid")
    words = words[: words.index("1>/var/log/katib/metrics.log")]
    assert words[:3] == ["modelpress", "step", "train"]
    overrides = {}
    for path, _, text in (words[i + 1].partition("=") for i, w in enumerate(words) if w == "--set"):
        try:
            overrides[path] = json.loads(text)
        except json.JSONDecodeError:
            overrides[path] = text
    return parse_config("train", words[words.index("--config") + 1], overrides), words


def test_a_trials_values_reach_its_train_config_through_katibs_shell_wrapping():
    experiment = with_run_values(manifest({"algorithm": "hyperband", "epochs": 9, "space": SPACE}), {"train.seed": 7, "data.path": None})
    config, words = trial_config(experiment, {
        "learning_rate": "0.0031", "batch_size": "48", "optimizer": '"sgd"', "model.params.hidden": "[64,32]",
        "model.params.dropout": "0.25", "epochs": "3",
    })
    assert (config.train.learning_rate, config.train.batch_size, config.train.optimizer, config.train.epochs) == (0.0031, 48, "sgd", 3)
    assert config.model.params == {"hidden": [64, 32], "dropout": 0.25}
    assert config.train.seed == 7 and not any("data.path" in w for w in words)  # a run's value reaches the trials; None keeps the spec's
    assert words[words.index("--output") + 1] == "/tmp/modelpress-trial"


def test_the_metric_line_train_logs_is_what_katibs_collector_reads():
    from modelpress.steps.train.step import validation_scores

    scores = validation_scores({"val_accuracy": [0.8, 0.93, 0.9], "val_loss": [0.5, 0.2, float("nan")]})
    line = "[   12.3s] validation " + " ".join(f"{k}={v:.6f}" for k, v in scores.items())
    assert {m[0]: float(m[1]) for m in KATIB_FILTER.findall(line)} == {"val_accuracy": 0.93, "val_loss": 0.2}
    assert validation_scores({"val_accuracy": [0.8], "val_loss": [float("nan")]}) == {"val_accuracy": 0.8}


def test_the_best_trial_becomes_best_json_in_the_local_tune_steps_shape():
    status = {"currentOptimalTrial": {
        "bestTrialName": "digits-mlp-tune-x7k2p-4b7d",
        "observation": {"metrics": [{"name": "val_accuracy", "latest": "0.9444", "max": "0.9444", "min": "0.9444"},
                                    {"name": "val_loss", "latest": "0.21", "max": "0.21", "min": "0.21"}]},
        "parameterAssignments": [{"name": "learning_rate", "value": "0.0031"}, {"name": "batch_size", "value": "48"},
                                 {"name": "optimizer", "value": '"sgd"'}, {"name": "model.params.hidden", "value": "[64,32]"},
                                 {"name": "epochs", "value": "9"}],
    }}
    assert best_trial_hyperparameters(status, "val_accuracy") == {
        "train": {"learning_rate": 0.0031, "batch_size": 48, "optimizer": "sgd"},
        "model": {"params": {"hidden": [64, 32]}},
        "objective": "val_accuracy",
        "score": 0.9444,
    }
    with pytest.raises(StepFailed, match="no trial completed"):
        best_trial_hyperparameters({"currentOptimalTrial": {"bestTrialName": "", "observation": {}}}, "val_accuracy")


def test_the_trials_run_in_the_tune_tasks_placement_and_the_clusters_settings():
    experiment = manifest({"space": SPACE}, {"namespace": "ml", "gpu_node_selector": {"pool": "a100"}, "secret_name": "s3-keys"})
    pod = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    assert experiment["metadata"]["namespace"] == "ml" and pod["nodeSelector"] == {"pool": "a100"}
    # each trial is a train run: the train step's CPU, memory and GPU; the S3 Secret is required
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}
    }
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-keys", "optional": False}}]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "modelpress-runner"


def test_hyperband_with_fewer_epochs_than_its_factor_is_one_line():
    with pytest.raises(UserError) as refused:
        manifest({"algorithm": "hyperband", "epochs": 2, "space": SPACE})
    assert "\n" not in str(refused.value) and "tune.epochs: 2 epochs" in str(refused.value) and "set tune.epochs >= 3" in str(refused.value)


def test_the_default_tuner_stays_keras_tuner():
    assert KubernetesSpec().tuner == "keras-tuner"
