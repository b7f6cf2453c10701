"""Build Airflow DAGs from workflow specs via `plan.build_plan` (the plan `modelpress run` and Kubeflow use).

Every plan task runs `modelpress step STEP --config ... --input ... --output ...`:
- cluster mode (default): a KubernetesPodOperator in the task's image (`plan.placement`: a GPU step in its set's
  CUDA variant), GPU limit, node selector and tolerations from the workflow's `kubernetes:` section, the result through
  /airflow/xcom/return.json;
- local mode (MODELPRESS_AIRFLOW_MODE=local, for development and tests): the same command in a subprocess of the
  Python MODELPRESS_STEP_PYTHON names (default: this one), which needs the step extras (TensorFlow...).
Outputs live under <run_root>/<dag id>/<run id>/, and every step overwrites its own output, so a retried task
repeats its work without touching other runs. Conversion targets fan out with dynamic task mapping, one mapped task
group per image they run in (`plan.fan_outs`), each running a target's convert and validation; a target that skips
(no GPU here) skips only its own. Skipping, config overrides and "nothing blessed, nothing to publish" are decided
by the core's task driver inside the step (`modelpress._core.driver`), as in every other mode.
This module imports no TensorFlow: it reads specs and the registry only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.standard.operators.python import (
    PythonOperator,
    ShortCircuitOperator,
)
from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    BaseOperator,
    CronTriggerTimetable,
    Param,
    task_group,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

from modelpress.common.errors import UserError
from modelpress.contract.workflow import Workflow
from modelpress.execution.plan import FanOut, Task, build_plan, fan_outs, load_workflow, placement
from modelpress.execution.runner import output_uri
from modelpress.kubernetes.pods import check_cluster_workflow, check_credentials, pod_placement
from modelpress.kubernetes.tfjob import OUTPUT_PLACEHOLDER, training_workers
from modelpress.kubernetes.trainjob import run_training_job, training_job_manifest
from modelpress.steps.catalog import STEPS

MODE_ENV = "MODELPRESS_AIRFLOW_MODE"  # "kubernetes" (default) or "local"
WORKFLOWS_ENV = "MODELPRESS_WORKFLOWS_DIR"  # overrides the folder the DAG file names (its own workflows/)
RUN_ROOT_ENV = "MODELPRESS_RUN_ROOT"  # default of the DAG's run_root parameter
STEP_PYTHON_ENV = "MODELPRESS_STEP_PYTHON"  # local mode: the Python that runs steps (default: the worker's own)
DEFAULT_RUN_ROOT = "s3://modelpress/runs"
RUN_PREFIX = "{{ params.run_root }}/{{ dag.dag_id }}/{{ run_id }}"
POD_RESULT = "/airflow/xcom/return.json"
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


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
    - a step that returns {"skipped": ...} (the driver's decision) skips the task and what reads it.
    """

    list_sources: dict[int, tuple[str, int | None]] = {}  # position of a list input's URI -> (task id, map index)

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


class StepPodOperator(StepOperation, KubernetesPodOperator):
    """`modelpress step ...` in the step's image on the cluster; its result comes back through the XCom sidecar."""

    def execute(self, context):
        output = self.arguments[self.arguments.index("--output") + 1]
        if "://" not in output:  # a folder would be this pod's own disk, gone with it
            raise AirflowFailException(f"run_root must be an s3:// prefix on the cluster (this run writes {output}); set the run's run_root")
        return self.step_result(super().execute(context))


class LocalStepOperator(StepOperation, BaseOperator):
    """Runs `modelpress step ...` in a subprocess on the worker; the step's result becomes the XCom value.

    A user error (exit code 2: bad spec, missing input) fails without retries: retrying cannot fix it.
    """

    template_fields = ("arguments",)

    def __init__(self, *, arguments: list[str], **kwargs):
        super().__init__(**kwargs)
        self.arguments = arguments

    def execute(self, context) -> dict:
        with tempfile.TemporaryDirectory(prefix="modelpress-airflow-") as scratch:
            result_file = Path(scratch) / "result.json"
            python = os.environ.get(STEP_PYTHON_ENV) or sys.executable
            command = [python, "-m", "modelpress.cli.main", *self.arguments, "--result", str(result_file)]
            completed = subprocess.run(command, capture_output=True, text=True)
            for line in completed.stderr.splitlines():
                self.log.info("%s", line)
            if completed.returncode != 0:
                last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
                failure = AirflowFailException if completed.returncode == UserError.exit_code else RuntimeError
                raise failure(f"modelpress step exited with {completed.returncode}: {last}")
            return self.step_result(json.loads(result_file.read_text()))


def step_arguments(task: Task, plan: dict[str, Task]) -> list[str]:
    """The `modelpress step` arguments of a plan task, with outputs under the run's prefix."""
    output = output_uri(RUN_PREFIX, task)
    arguments = ["step", task.step, "--config", task.config.model_dump_json(exclude_unset=True), "--output", output]
    for name, source in task.inputs.items():
        for source_id in [source] if isinstance(source, str) else source:
            arguments += ["--input", f"{name}={output_uri(RUN_PREFIX, plan[source_id])}"]
    return [*arguments, "--overwrite"]  # the prefix is this run's: a retry replaces only its own output


def list_input_sources(task: Task, arguments: list[str], producers: dict[str, tuple[str, int | None]]):
    """Positions of the task's list-input URIs in its arguments -> the (Airflow task id, map index) writing each."""
    positions = [i + 1 for i, a in enumerate(arguments) if a == "--input"]  # step_arguments' order: task.sources()
    names = [name for name, source in task.inputs.items() for _ in ([source] if isinstance(source, str) else source)]
    listed = STEPS[task.step].list_inputs
    return {p: producers[s] for p, s, name in zip(positions, task.sources(), names, strict=True) if name in listed}


def with_result(arguments: list[str]) -> list[str]:
    """In a pod the step writes its result where Airflow's XCom sidecar reads it; locally the operator picks a file."""
    return arguments if mode() == "local" else [*arguments, "--result", POD_RESULT]


def pod_settings(task: Task, workflow: Workflow) -> dict[str, Any]:
    """KubernetesPodOperator arguments for a step: image, namespace, credentials, GPU and placement."""
    kubernetes = workflow.kubernetes
    where = pod_placement(placement(task), kubernetes)
    settings = {
        "image": where.image,
        "cmds": ["modelpress"],
        "namespace": kubernetes.namespace,
        "service_account_name": kubernetes.service_account,
        "env_from": [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=kubernetes.secret_name, optional=True))],
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",
        "node_selector": where.node_selector,
    }
    if where.gpu_limits:
        settings["container_resources"] = k8s.V1ResourceRequirements(limits=where.gpu_limits)
    if where.tolerations:
        settings["tolerations"] = [k8s.V1Toleration(**toleration) for toleration in where.tolerations]
    return settings


def step_operator(task_id: str, task: Task, workflow: Workflow, arguments):
    """The operator of a plan task. `arguments`: the step's arguments, or in the targets' task group a mapped
    argument (one list per target, already through `with_result`)."""
    # A task reading a list (push) still runs when some sources were skipped (a target whose hardware is absent).
    trigger_rule = "none_failed" if STEPS[task.step].list_inputs else "all_success"
    if mode() == "local":
        return LocalStepOperator(task_id=task_id, arguments=arguments, trigger_rule=trigger_rule)
    workers = training_workers(task.step, task.config)
    if workers > 1:  # multi-worker training: this task creates a TrainJob (or TFJob) and waits for it
        output = arguments[arguments.index("--output") + 1]
        command = [OUTPUT_PLACEHOLDER if a == output else a for a in arguments]
        manifest = training_job_manifest(
            f"{workflow.name}-{task_id}", workers=workers, placement=placement(task), arguments=command, settings=workflow.kubernetes
        )
        return PythonOperator(task_id=task_id, python_callable=run_training_job, op_kwargs={"manifest": manifest, "output": output})
    if isinstance(arguments, list):
        arguments = with_result(arguments)
    settings = pod_settings(task, workflow)
    return StepPodOperator(task_id=task_id, name=task_id, arguments=arguments, trigger_rule=trigger_rule, **settings)


def is_blessed(ti, source: str) -> bool:
    """Gate: continue only when the validation task `source` blessed its artifact."""
    return bool((ti.xcom_pull(task_ids=source) or {}).get("blessed"))


def schedule_of(workflow: Workflow):
    """The spec's schedule, its asset (a data drop triggers the DAG), or both."""
    if workflow.asset and workflow.schedule:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(workflow.schedule, timezone="UTC"), assets=[Asset(workflow.asset)])
    if workflow.asset:
        return [Asset(workflow.asset)]
    return workflow.schedule


def add_fan_out(dag: DAG, fan_out: FanOut, by_id: dict[str, Task], workflow: Workflow) -> dict[str, Any]:
    """One image's targets as a mapped task group: map index i runs target i's convert, then its validation, so a
    skipped or failed target stops only its own validation. Task ids FanOut.names (KFP uses the same)."""
    pairs, names = fan_out.pairs, fan_out.names

    @task_group(group_id=f"targets_{fan_out.placement.label}", prefix_group_id=False)
    def targets(convert: list[str], validate: list[str]) -> None:
        step_operator(names[0], pairs[0][0], workflow, convert) >> step_operator(names[1], pairs[0][1], workflow, validate)

    targets.expand_kwargs(
        [{"convert": with_result(step_arguments(c, by_id)), "validate": with_result(step_arguments(v, by_id))} for c, v in pairs]
    )
    return {task.id: dag.get_task(names[i]) for pair in pairs for i, task in enumerate(pair)}


def gated(task: Task, source: str, by_id: dict[str, Task]) -> bool:
    """A non-validation step reading one validation (push, deploy) runs only if that validation blessed."""
    single = source in task.inputs.values()
    return single and STEPS[by_id[source].step].output == "validation" and STEPS[task.step].output != "validation"


def build_dag(workflow: Workflow, dag_id: str) -> DAG:
    if mode() == "kubernetes":
        check_cluster_workflow(workflow)
    else:
        check_credentials(workflow)  # local mode passes configs on the worker's command lines too
    plan = build_plan(workflow)
    by_id = {task.id: task for task in plan}
    groups = fan_outs(plan)
    dag = DAG(
        dag_id=dag_id,
        description=workflow.description or f"ModelPress workflow {workflow.name}",
        schedule=schedule_of(workflow),
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params={
            "run_root": Param(
                os.environ.get(RUN_ROOT_ENV, DEFAULT_RUN_ROOT), type="string", description="s3:// prefix or folder runs go to"
            )
        },
        tags=["modelpress"],
    )
    with dag:
        # plan task id -> the operator running it (the fan-out's two stand for every target's tasks)
        operators: dict[str, Any] = {}
        for fan_out in groups:
            operators |= add_fan_out(dag, fan_out, by_id, workflow)
        producers = {task.id: (task.id, None) for task in plan} | {
            task.id: (fan_out.names[i], number)
            for fan_out in groups
            for number, pair in enumerate(fan_out.pairs)
            for i, task in enumerate(pair)
        }
        for task in plan:
            if task.id not in operators:
                arguments = step_arguments(task, by_id)
                operators[task.id] = step_operator(task.id, task, workflow, arguments)
                operators[task.id].list_sources = list_input_sources(task, arguments, producers)
        gates: dict[str, Any] = {}
        edges: set[tuple[int, int]] = set()
        for task in plan:
            for source in task.sources():
                upstream = operators[source]
                if gated(task, source, by_id):
                    if source not in gates:
                        gates[source] = ShortCircuitOperator(
                            task_id=f"{source}_blessed", python_callable=is_blessed, op_kwargs={"source": source}
                        )
                        upstream >> gates[source]
                    upstream = gates[source]
                downstream = operators[task.id]
                if upstream is not downstream and (id(upstream), id(downstream)) not in edges:
                    edges.add((id(upstream), id(downstream)))
                    upstream >> downstream
    return dag


class InvalidWorkflows(DAG):
    """Stands for the workflow files that failed to load: Airflow keeps the DAGs of this file that validate and
    records an import error for one that does not, so each bad file is reported and the good ones still load."""

    def validate(self):
        raise UserError(self.description)


def workflow_dags(folder: Path | None = None) -> dict[str, DAG]:
    """One DAG per *.yaml/*.yml in the workflows folder ($MODELPRESS_WORKFLOWS_DIR when set), keyed by DAG id (the
    file name)."""
    if not (os.environ.get(WORKFLOWS_ENV) or folder):
        raise UserError(f"no workflows folder: pass one to workflow_dags() or set {WORKFLOWS_ENV}")
    folder = Path(os.environ.get(WORKFLOWS_ENV) or folder)
    dags: dict[str, DAG] = {}
    problems: list[str] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        dag_id = path.stem.replace(" ", "_")
        try:
            dags[dag_id] = build_dag(load_workflow(path), dag_id)
        except Exception as exc:  # noqa: BLE001 (any failure is reported as this file's problem only)
            message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            problems.append(message if str(path) in message else f"{path}: {message}")
    if problems:
        dags["modelpress_invalid_workflows"] = InvalidWorkflows(
            dag_id="modelpress_invalid_workflows", description=" | ".join(problems), schedule=None
        )
    return dags


def install_workflow(path: Path, folder: Path) -> tuple[DAG, Workflow, Path]:
    """Check that a workflow builds its DAG, then copy it into the workflows folder (`modelpress compile airflow`)."""
    workflow = load_workflow(path)
    dag = build_dag(workflow, path.stem)
    target = folder / f"{path.stem}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    if not (target.exists() and target.resolve() == path.resolve()):
        target.write_text(path.read_text())
    return dag, workflow, target
