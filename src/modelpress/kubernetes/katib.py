"""`tune:` on the cluster with `kubernetes.tuner: katib`: a Katib v1beta1 Experiment, built as plain dicts.

Each trial is a batch Job running `modelpress step train` in the tune task's placement with the trial's values as
`--set` overrides and `tune.epochs` epochs (hyperband: the epochs of its round, Katib's resource parameter). Train
logs `validation val_accuracy=0.93 val_loss=0.21`, which Katib's StdOut metrics collector reads. The adapters create
the Experiment at run time, wait for it and write the best trial as the tune step's `best.json`
(`run_experiment`), which train reads as its `hyperparameters` input.

The trial command is one `sh -c` line with every argument shell-quoted: for the StdOut collector Katib joins the
container's command and args with spaces into `sh -c` (pkg/webhook/v1beta1/pod/utils.go), which would split the
config JSON. Choices are JSON text (`"adam"`, `[64,32]`), so every value a trial gets reads back with json.loads.
This module imports neither kfp nor airflow; the kubernetes client only when an Experiment runs.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from typing import Any

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.progress import log
from modelpress.contract.images import Placement
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.contract.schema import spec_hash
from modelpress.contract.training import MODEL_PARAM_PREFIX, TUNABLE_TRAIN, TuneSpec, is_integer_range
from modelpress.contract.workflow import Workflow
from modelpress.io import storage
from modelpress.io.artifacts import ArtifactMeta, finish
from modelpress.kubernetes.pods import pod_placement, pod_spec
from modelpress.kubernetes.tfjob import run_job
from modelpress.steps.catalog import step_resources
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.tune.config import TuneConfig

GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"
ALGORITHMS = {"random": "random", "bayesian": "bayesianoptimization", "hyperband": "hyperband"}
DEFAULT_MAX_TRIALS, DEFAULT_FACTOR = 10, 3  # as the local tune step
CONTAINER = "trial"
RESOURCE = "epochs"  # hyperband's resource parameter: the trial's train.epochs
TRIAL_OUTPUT = "/tmp/modelpress-trial"  # a trial's model is dropped with its pod: only its printed scores count
BEST_FILE = "best.json"
NAME_PREFIX_LENGTH = 34  # Katib's webhook takes names of at most 40 characters; generateName appends 5 and a '-'
# Katib's conditions for a batch Job trial (GJSON), as in its docs.
JOB_SUCCEEDED = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'


def katib_tunes(step: str, settings: KubernetesSpec) -> bool:
    """Whether a plan task runs as a Katib Experiment: tune, with kubernetes.tuner katib."""
    return step == "tune" and settings.tuner == "katib"


def trial_parameter(name: str) -> str:
    """The name a trial's command refers to a search parameter by: learning_rate -> learningRate,
    model.params.hidden -> modelParamsHidden."""
    first, *rest = re.split(r"[._]", name)
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def search_parameter(name: str, entry: Any) -> dict[str, Any]:
    """One tune.space entry as a Katib parameter: a list is categorical (each choice as JSON text), a range int or
    double as tune declares it for keras-tuner, log sampling a logUniform distribution."""
    if isinstance(entry, list):
        choices = [json.dumps(choice, separators=(",", ":")) for choice in entry]
        if any("'" in choice for choice in choices):  # the trial's shell line quotes values with '
            raise UserError(f"tune.space.{name}: a choice with a ' cannot reach a Katib trial's command; remove the quote")
        return {"name": name, "parameterType": "categorical", "feasibleSpace": {"list": choices}}
    integer = is_integer_range(name, entry)
    number = (lambda v: str(int(v))) if integer else repr
    space = {"min": number(entry.min), "max": number(entry.max)}
    if entry.step is not None:
        space["step"] = number(entry.step)
    if entry.sampling == "log":
        space["distribution"] = "logUniform"
    return {"name": name, "parameterType": "int" if integer else "double", "feasibleSpace": space}


def hyperband_plan(epochs: int, factor: int) -> tuple[int, int]:
    """(trials, trials its first bracket runs at once) of Hyperband with R = epochs and eta = factor, counted as
    Katib's suggestion service runs it (pkg/suggestion/v1beta1/hyperband/service.py)."""
    s_max = int(math.log(epochs) / math.log(factor))
    trials = 0
    for s in range(s_max, -1, -1):
        count = math.ceil((s_max + 1) * factor**s / (s + 1))
        trials += count
        for round_ in range(s):  # each round keeps the best 1/factor of the last
            trials += math.ceil(math.ceil(count * factor**-round_) / factor)
    return trials, math.ceil(factor**s_max)


def algorithm(tune: TuneSpec, parallel_trials: int) -> tuple[dict[str, Any], int, int]:
    """(the Experiment's algorithm, maxTrialCount, parallelTrialCount)."""
    if tune.algorithm != "hyperband":
        trials = tune.max_trials or DEFAULT_MAX_TRIALS
        settings = [{"name": "random_state", "value": str(tune.seed)}]
        return {"algorithmName": ALGORITHMS[tune.algorithm], "algorithmSettings": settings}, trials, min(parallel_trials, trials)
    factor = tune.factor or DEFAULT_FACTOR
    if tune.epochs < factor:
        raise UserError(
            f"tune.epochs: {tune.epochs} epochs leave Katib's hyperband no round to stop trials early (its resource is "
            f"epochs, cut by factor {factor}); set tune.epochs >= {factor}, a smaller tune.factor, or algorithm: random"
        )
    trials, first_bracket = hyperband_plan(tune.epochs, factor)
    settings = [
        {"name": "resource_name", "value": RESOURCE},
        {"name": "eta", "value": str(factor)},
        {"name": "r_l", "value": str(tune.epochs)},
    ]
    return {"algorithmName": "hyperband", "algorithmSettings": settings}, trials, max(parallel_trials, first_bracket)


def trial_job(workflow: Workflow, placement: Placement, command: list[str]) -> dict[str, Any]:
    """The batch Job of one trial: `command` in one shell line, in the tune task's placement, with the S3 keys."""
    settings = workflow.kubernetes
    where = pod_placement(placement, settings, step_resources("train", settings))
    container = {"name": CONTAINER, "image": where.image, "command": ["sh", "-c"], "args": [shlex.join(command)]}
    pod = {**pod_spec(where, settings, container), "restartPolicy": "Never"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "backoffLimit": 0,  # a failed trial is Katib's to count, not to retry
            # A mesh sidecar would keep the pod, and so the Job, from completing.
            "template": {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}, "spec": pod},
        },
    }


def experiment_manifest(workflow: Workflow, config: TuneConfig, placement: Placement) -> dict[str, Any]:
    """The Experiment searching `config.tune` (the tune task's config) with trials that train as `modelpress step
    train` would with the same model, data and train settings, in `placement` (the tune task's)."""
    tune = config.tune
    spec_algorithm, max_trials, parallel = algorithm(tune, workflow.kubernetes.parallel_trials)
    parameters = [search_parameter(name, entry) for name, entry in tune.space.items()]
    trial = config.model_dump(mode="json", exclude_unset=True, exclude={"tune"})
    trial["train"] = {**trial.get("train", {}), "epochs": tune.epochs}
    TrainConfig.model_validate(trial)  # the config every trial's train step gets
    # (search parameter, its trialParameters name, the train config path it sets)
    assigned = [(name, trial_parameter(name), name if name.startswith(MODEL_PARAM_PREFIX) else f"train.{name}") for name in tune.space]
    if tune.algorithm == "hyperband":
        parameters.append({"name": RESOURCE, "parameterType": "int", "feasibleSpace": {"min": "1", "max": str(tune.epochs)}})
        assigned.append((RESOURCE, RESOURCE, "train.epochs"))
    command = ["modelpress", "step", "train", "--config", json.dumps(trial, separators=(",", ":")), "--output", TRIAL_OUTPUT, "--overwrite"]
    for _, reference, path in assigned:
        command += ["--set", f"{path}=${{trialParameters.{reference}}}"]
    other_metric = "val_loss" if tune.objective == "val_accuracy" else "val_accuracy"
    prefix = re.sub(r"[^a-z0-9-]", "-", f"{workflow.name}-tune".lower()).strip("-")
    prefix = (prefix if prefix[:1].isalpha() else f"t-{prefix}")[: NAME_PREFIX_LENGTH - 1].strip("-")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {
            "generateName": f"{prefix}-",
            "namespace": workflow.kubernetes.namespace,
            "labels": {"app.kubernetes.io/part-of": "modelpress", "modelpress.io/step": "tune"},
        },
        "spec": {
            "objective": {
                "type": "maximize" if tune.objective == "val_accuracy" else "minimize",
                "objectiveMetricName": tune.objective,
                "additionalMetricNames": [other_metric],
            },
            "algorithm": spec_algorithm,
            "maxTrialCount": max_trials,
            "parallelTrialCount": parallel,
            # Katib fails the Experiment once this many trials failed: only when none completes, like the local step.
            "maxFailedTrialCount": max_trials,
            "parameters": parameters,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "trialTemplate": {
                "primaryContainerName": CONTAINER,
                "successCondition": JOB_SUCCEEDED,
                "failureCondition": JOB_FAILED,
                "trialParameters": [
                    {"name": reference, "reference": name, "description": f"sets {path}"} for name, reference, path in assigned
                ],
                "trialSpec": trial_job(workflow, placement, command),
            },
        },
    }


def best_trial_hyperparameters(status: dict[str, Any], objective: str) -> dict[str, Any]:
    """An Experiment's status.currentOptimalTrial as the tune step's best.json: {"train": {...}, "model": {"params":
    {...}}, "objective", "score"}; hyperband's epochs are not a hyperparameter of train and are left out."""
    best = status.get("currentOptimalTrial") or {}
    scores = {m["name"]: m for m in (best.get("observation") or {}).get("metrics") or []}
    if not best.get("bestTrialName") or objective not in scores:
        raise StepFailed(f"the Katib Experiment has no trial with a {objective} (status.currentOptimalTrial is empty): no trial completed")
    values = {a["name"]: json.loads(a["value"]) for a in best.get("parameterAssignments") or [] if a["name"] != RESOURCE}
    train = {name: value for name, value in values.items() if name in TUNABLE_TRAIN}
    params = {name.removeprefix(MODEL_PARAM_PREFIX): v for name, v in values.items() if name.startswith(MODEL_PARAM_PREFIX)}
    return {"train": train, **({"model": {"params": params}} if params else {}), "objective": objective, "score": float(scores[objective]["latest"])}


def with_run_values(manifest: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The Experiment with pipeline-parameter values (dotted config paths, None = keep) in every trial's command."""
    manifest = json.loads(json.dumps(manifest))
    (container,) = manifest["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    extra = [a for path, value in overrides.items() if value is not None for a in ("--set", f"{path}={json.dumps(value)}")]
    container["args"] = [" ".join([container["args"][0], shlex.join(extra)]).strip()]
    return manifest


def run_experiment(manifest: dict[str, Any], config: TuneConfig, output: str, overrides: dict[str, Any] | None = None,
                   poll_seconds: float = 30.0) -> dict[str, Any]:
    """What the adapters' tune task calls: create the Experiment, wait until it succeeds, write its best trial as
    best.json (with artifact.json) to `output`."""
    from kubernetes import client

    manifest = with_run_values(manifest, overrides or {})
    created = run_job(manifest, PLURAL, "Succeeded", manifest["spec"]["parallelTrialCount"], "katib.kubeflow.org/experiment",
                      poll_seconds, unit="trials at once")
    experiment = client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, created["namespace"], PLURAL, created["experiment"])
    best = best_trial_hyperparameters(experiment.get("status", {}), config.tune.objective)
    log(f"tune: best trial {experiment['status']['currentOptimalTrial']['bestTrialName']}: {best}")
    write_best(best, config, output, experiment)
    return {"uri": output, "experiment": created["experiment"], "best": best}


def write_best(best: dict[str, Any], config: TuneConfig, output: str, experiment: dict[str, Any]) -> ArtifactMeta:
    """best.json and its artifact.json, shaped as the local tune step writes them."""
    status = experiment.get("status", {})
    with storage.staged_output(output, overwrite=True) as folder:
        (folder / BEST_FILE).write_text(json.dumps(best, indent=2))
        return finish(folder, ArtifactMeta(
            format="hyperparameters",
            step="tune",
            model_path=BEST_FILE,
            config_hash=spec_hash(config),
            metrics={f"best_{best['objective']}": best["score"], "trials": status.get("trials", 0)},
            details={"tuner": "katib", "experiment": experiment["metadata"]["name"], "algorithm": config.tune.algorithm,
                     "objective": best["objective"], "best": best,
                     "trials_succeeded": status.get("trialsSucceeded", 0), "trials_failed": status.get("trialsFailed", 0)},
        ))
