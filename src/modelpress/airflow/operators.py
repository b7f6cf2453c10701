"""The operators a ModelPress step runs in under Airflow, for the DAG factory and for a team's own DAG.

- cluster mode (default): `StepPodOperator`, a KubernetesPodOperator in the task's image (`plan.placement`: a GPU
  step in its set's CUDA variant), GPU limit, node selector and tolerations from the workflow's `kubernetes:`
  section, the step's CPU and memory requests and limits and its execution timeout (`catalog.step_resources`), a
  start-up timeout that fits a GPU node scaling up, the result through /airflow/xcom/return.json; a step that exits
  2 (user error) is not retried; a train task with several workers creates a TrainJob (or TFJob) and waits for it;
- local mode (MODELPRESS_AIRFLOW_MODE=local, for development and tests): `LocalStepOperator`, the same command in a
  subprocess of the Python MODELPRESS_STEP_PYTHON names (default: this one), which needs the step extras.
Skipping, config overrides and "nothing blessed, nothing to publish" are decided by the core's task driver inside
the step (`modelpress.execution.driver`), as in every other mode. Public Airflow API only (airflow.sdk, providers).
`modelpress_step()` builds either operator for one step in a team's own DAG (docs/reusable-steps.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

from modelpress.common.errors import UserError
from modelpress.contract.images import Placement
from modelpress.contract.kubernetes import KubernetesSpec, StepResources
from modelpress.contract.workflow import Workflow
from modelpress.execution.plan import Task, placement
from modelpress.execution.runner import REPORT_PLACEMENT
from modelpress.kubernetes.katib import experiment_manifest, katib_tunes, run_experiment
from modelpress.kubernetes.pods import pod_placement
from modelpress.kubernetes.tfjob import OUTPUT_PLACEHOLDER, training_workers
from modelpress.kubernetes.trainjob import run_training_job, training_job_manifest
from modelpress.steps.catalog import STEPS, checked_step, step_resources
from modelpress.steps.tune.config import TuneConfig

MODE_ENV = "MODELPRESS_AIRFLOW_MODE"  # "kubernetes" (default) or "local"
STEP_PYTHON_ENV = "MODELPRESS_STEP_PYTHON"  # local mode: the Python that runs steps (default: the worker's own)
POD_RESULT = "/airflow/xcom/return.json"


def mode() -> str:
    value = os.environ.get(MODE_ENV, "kubernetes")
    if value not in ("kubernetes", "local"):
        raise UserError(f"{MODE_ENV}={value!r} is not a mode; set it to 'kubernetes' (default) or 'local'")
    return value


class StepOperation:
    """What both step operators share:
    - in a targets' mapped task group `arguments` is resolved from the group's expansion after templating, so its
      run-prefix templates are rendered once more here (JSON configs hold no '{{');
    - a list input (push's validations) leaves out the outputs of tasks Airflow skipped, which never ran;
    - a step that returns {"skipped": ...} (the driver's decision) skips the task and what reads it;
    - `target`: in the targets' task group, the target a mapped instance runs (a template field: the group's
      expansion resolves it), which the UI shows as its map index.
    """

    list_sources: dict[int, tuple[str, int | None]] = {}  # position of a list input's URI -> (task id, map index)

    @staticmethod
    def showing_target(target: str | None, kwargs: dict) -> dict:
        """Operator arguments naming a mapped instance by its target. (Airflow wraps the __init__ of operator
        classes only, so each operator passes its own through this.)"""
        return kwargs if target is None else {**kwargs, "map_index_template": "{{ task.target }}"}

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self.arguments = self.render_template(self.arguments, context, jinja_env)
        ti = context["ti"]
        skipped = {
            position
            for position, (task_id, index) in self.list_sources.items()
            if (ti.xcom_pull(task_ids=task_id) if index is None else ti.xcom_pull(task_ids=task_id, map_indexes=index)) is None
        }
        self.arguments = [a for i, a in enumerate(self.arguments) if i not in skipped and i + 1 not in skipped]

    @staticmethod
    def step_result(result: dict) -> dict:
        if result.get("skipped"):
            raise AirflowSkipException(result["reason"])
        return result


def container_exit_code(pod: k8s.V1Pod | None, container: str) -> int | None:
    """The exit code of a pod's terminated `container`, None while it runs or when the pod has no such container."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    state = next((status.state for status in statuses if status.name == container), None)
    return state.terminated.exit_code if state is not None and state.terminated is not None else None


class StepPodOperator(StepOperation, KubernetesPodOperator):
    """`modelpress step ...` in the step's image on the cluster; its result comes back through the XCom sidecar.

    A step that exits 2 (a user error: bad spec, missing input) fails without retries, as in local mode: the
    operator reads the step container's exit code where the provider turns a finished pod into the task's outcome.
    """

    template_fields = (*KubernetesPodOperator.template_fields, "target")

    def __init__(self, *, target: str | None = None, **kwargs):
        super().__init__(**self.showing_target(target, kwargs))
        self.target = target

    def execute(self, context):
        output = self.arguments[self.arguments.index("--output") + 1]
        if "://" not in output:  # a folder would be this pod's own disk, gone with it
            raise AirflowFailException(f"run_root must be an s3:// prefix on the cluster (this run writes {output}); set the run's run_root")
        return self.step_result(super().execute(context))

    def cleanup(self, pod, remote_pod, xcom_result=None, context=None):
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except AirflowException as failure:
            user_error = container_exit_code(remote_pod, self.base_container_name) == UserError.exit_code
            if not user_error or isinstance(failure, AirflowSkipException | AirflowFailException):
                raise
            message = f"modelpress step exited with {UserError.exit_code}, a user error that retrying cannot fix: {failure}"
            raise AirflowFailException(message) from failure


class LocalStepOperator(StepOperation, BaseOperator):
    """Runs `modelpress step ...` in a subprocess on the worker; the step's result becomes the XCom value.

    A user error (exit code 2: bad spec, missing input) fails without retries: retrying cannot fix it.
    """

    template_fields = ("arguments", "target")

    def __init__(self, *, arguments: list[str], target: str | None = None, **kwargs):
        super().__init__(**self.showing_target(target, kwargs))
        self.arguments, self.target = arguments, target

    def execute(self, context) -> dict:
        with tempfile.TemporaryDirectory(prefix="modelpress-airflow-") as scratch:
            result_file = Path(scratch) / "result.json"
            python = os.environ.get(STEP_PYTHON_ENV) or sys.executable
            command = [python, "-m", "modelpress", *self.arguments, "--result", str(result_file)]
            completed = subprocess.run(command, capture_output=True, text=True)
            for line in completed.stderr.splitlines():
                self.log.info("%s", line)
            if completed.returncode != 0:
                last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
                failure = AirflowFailException if completed.returncode == UserError.exit_code else RuntimeError
                raise failure(f"modelpress step exited with {completed.returncode}: {last}")
            return self.step_result(json.loads(result_file.read_text()))


def step_command(step: str, config_json: str, inputs: dict[str, str | list[str]], output: str) -> list[str]:
    """The `modelpress step` arguments; the step overwrites its output, so a retry replaces only its own."""
    arguments = ["step", step, "--config", config_json, "--output", output]
    for name, uris in inputs.items():
        for uri in [uris] if isinstance(uris, str) else uris:
            arguments += ["--input", f"{name}={uri}"]
    return [*arguments, "--overwrite"]


def with_result(arguments: list[str]) -> list[str]:
    """In a pod the step writes its result where Airflow's XCom sidecar reads it; locally the operator picks a file."""
    return arguments if mode() == "local" else [*arguments, "--result", POD_RESULT]


def execution_timeout(resources: StepResources) -> timedelta | None:
    return timedelta(minutes=resources.timeout_minutes) if resources.timeout_minutes else None


def pod_settings(runs_in: Placement, resources: StepResources, kubernetes: KubernetesSpec) -> dict[str, Any]:
    """KubernetesPodOperator arguments for a task placed so: image, namespace, credentials, CPU, memory, GPU,
    placement and timeouts."""
    where = pod_placement(runs_in, kubernetes, resources)
    # Required Secret: a missing one stops the pod at start with "secret not found", not late as "no credentials".
    secret = k8s.V1SecretEnvSource(name=kubernetes.secret_name, optional=False)
    settings = {
        "image": where.image,
        "cmds": ["modelpress"],
        "namespace": kubernetes.namespace,
        "service_account_name": kubernetes.service_account,
        "env_from": [k8s.V1EnvFromSource(secret_ref=secret)],
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",
        "node_selector": where.node_selector,
        "startup_timeout_seconds": where.startup_timeout_seconds,
        "execution_timeout": execution_timeout(resources),
    }
    if where.requests or where.all_limits:
        settings["container_resources"] = k8s.V1ResourceRequirements(requests=where.requests or None, limits=where.all_limits or None)
    if where.tolerations:
        settings["tolerations"] = [k8s.V1Toleration(**toleration) for toleration in where.tolerations]
    return settings


def run_katib_tune(manifest: dict[str, Any], config: str, output: str, overrides: list[str]) -> dict[str, Any]:
    """The Katib tune task's body: `overrides` are the run's rendered `--set PATH=JSON` values (its form's params)."""
    values = {path: json.loads(value) for path, _, value in (item.partition("=") for item in overrides)}
    return run_experiment(manifest, TuneConfig.model_validate_json(config), output, values)


def step_operator(task_id: str, task: Task, workflow: Workflow, arguments, target=None):
    """The operator of a plan task. `arguments`: the step's arguments, or in the targets' task group a mapped
    argument (one list per target, already through `with_result`), with `target` the mapped target names."""
    # A task reading a list (push) still runs when some sources were skipped (a target whose hardware is absent).
    trigger_rule = "none_failed" if STEPS[task.step].list_inputs else "all_success"
    if mode() == "local":
        return LocalStepOperator(task_id=task_id, arguments=arguments, trigger_rule=trigger_rule, target=target)
    workers = training_workers(task.step, task.config)
    if workers > 1:  # multi-worker training: this task creates a TrainJob (or TFJob) and waits for it
        output = arguments[arguments.index("--output") + 1]
        command = [OUTPUT_PLACEHOLDER if a == output else a for a in arguments]
        manifest = training_job_manifest(
            f"{workflow.name}-{task_id}", workers=workers, placement=placement(task), arguments=command, settings=workflow.kubernetes
        )
        return PythonOperator(
            task_id=task_id, python_callable=run_training_job, op_kwargs={"manifest": manifest, "output": output},
            execution_timeout=execution_timeout(step_resources(task.step, workflow.kubernetes)),
        )  # fmt: skip
    if katib_tunes(task.step, workflow.kubernetes):  # tune as a Katib Experiment: this task creates it and waits
        return PythonOperator(
            task_id=task_id, python_callable=run_katib_tune,
            op_kwargs={
                "manifest": experiment_manifest(workflow, task.config, placement(task)),
                "config": task.config.model_dump_json(),
                "output": arguments[arguments.index("--output") + 1],
                # the run's data (the form's data_uri); trials train with tune's own settings, as on Kubeflow
                "overrides": [value for flag, value in zip(arguments, arguments[1:], strict=False) if flag == "--set" and value.startswith("data.")],
            },
            execution_timeout=execution_timeout(step_resources(task.step, workflow.kubernetes)),
        )  # fmt: skip
    if isinstance(arguments, list):
        arguments = with_result(arguments)
    settings = pod_settings(placement(task), step_resources(task.step, workflow.kubernetes), workflow.kubernetes)
    return StepPodOperator(task_id=task_id, name=task_id, arguments=arguments, trigger_rule=trigger_rule, target=target, **settings)


def report_operator(workflow: Workflow, arguments: list[str]):
    """The run's report task (`modelpress report` in the report's image). It runs when no task failed, after a push
    that skipped too (nothing blessed is worth a report)."""
    if mode() == "local":
        return LocalStepOperator(task_id="report", arguments=arguments, trigger_rule="none_failed")
    # the report reads every validation, as validate reads one: validate's CPU, memory and time
    settings = pod_settings(REPORT_PLACEMENT, step_resources("validate", workflow.kubernetes), workflow.kubernetes)
    return StepPodOperator(task_id="report", name="report", arguments=with_result(arguments), trigger_rule="none_failed", **settings)


def modelpress_step(
    task_id: str,
    step: str,
    config: dict[str, Any] | None,
    inputs: dict[str, str | list[str]],
    output: str,
    kubernetes: dict[str, Any] | None = None,
    image: str | None = None,
    **operator_kwargs,
) -> BaseOperator:
    """One ModelPress step in a team's own DAG (docs/reusable-steps.md), run as the DAG factory runs its steps: a
    `StepPodOperator` placed by `kubernetes` (a workflow's `kubernetes:` section) on the cluster, a
    `LocalStepOperator` in local mode. `config` is checked now (one line naming the step and key); `inputs` (name ->
    URI, a list for a list input) and `output` may be Jinja templates; `image` replaces the step's stock image;
    `operator_kwargs` (outlets, retries, ...) go to the operator."""
    caller = f"modelpress_step('{step}')"
    spec, settings, step_config = checked_step(caller, step, config, kubernetes)
    if set(inputs) - {*spec.inputs, *spec.optional_inputs} or set(spec.inputs) - set(inputs):
        takes = f"{list(spec.inputs)}, optional {list(spec.optional_inputs)}" if spec.optional_inputs else list(spec.inputs)
        raise UserError(f"{caller}: inputs {sorted(inputs)}: the step takes {takes}")
    if training_workers(step, step_config) > 1:
        raise UserError(f"{caller}: train.workers: a reusable step trains with one worker; several need a workflow file")
    arguments = step_command(step, step_config.model_dump_json(exclude_unset=True), inputs, output)
    if mode() == "local":
        return LocalStepOperator(task_id=task_id, arguments=arguments, **operator_kwargs)
    settings = pod_settings(spec.placement, step_resources(step, settings), settings) | ({"image": image} if image else {})
    return StepPodOperator(task_id=task_id, name=task_id, arguments=with_result(arguments), **settings | operator_kwargs)
