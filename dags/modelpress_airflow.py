"""Build Airflow DAGs from workflow specs via `plan.build_plan` (the plan `modelpress run` and Kubeflow use).

Every plan task runs `modelpress step STEP --config ... --input ... --output ...`:
- cluster mode (default): a KubernetesPodOperator in the step's image, GPU limit, node selector and tolerations from
  the workflow's `cluster:` section, the result through /airflow/xcom/return.json;
- local mode (MODELPRESS_AIRFLOW_MODE=local, for development and tests): the same command in a subprocess.
Outputs live under <run_root>/<dag id>/<run id>/, and every step overwrites its own output, so a retried task
repeats its work without touching other runs. Conversion targets fan out with dynamic task mapping (expand).
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
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, BaseOperator, CronTriggerTimetable, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

from modelpress._core.errors import UserError
from modelpress._core.plan import Task, build_plan
from modelpress._core.registry import STEPS, image_for
from modelpress._core.runner import output_uri
from modelpress._core.spec import Workflow, load_workflow
from modelpress._core.tfjob import OUTPUT_PLACEHOLDER, run_training_job, tfjob_manifest, training_workers

MODE_ENV = "MODELPRESS_AIRFLOW_MODE"  # "kubernetes" (default) or "local"
WORKFLOWS_ENV = "MODELPRESS_WORKFLOWS_DIR"  # default: dags/workflows next to this file
RUN_ROOT_ENV = "MODELPRESS_RUN_ROOT"  # default of the DAG's run_root parameter
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


def workflows_dir() -> Path:
    return Path(os.environ.get(WORKFLOWS_ENV) or Path(__file__).parent / "workflows")


class LocalStepOperator(BaseOperator):
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
            command = [sys.executable, "-m", "modelpress._core.cli", *self.arguments, "--result", str(result_file)]
            completed = subprocess.run(command, capture_output=True, text=True)
            for line in completed.stderr.splitlines():
                self.log.info("%s", line)
            if completed.returncode != 0:
                last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
                failure = AirflowFailException if completed.returncode == UserError.exit_code else RuntimeError
                raise failure(f"modelpress step exited with {completed.returncode}: {last}")
            result = json.loads(result_file.read_text())
        if result.get("skipped"):
            raise AirflowSkipException(result["reason"])
        return result


def step_arguments(task: Task, plan: dict[str, Task]) -> list[str]:
    """The `modelpress step` arguments of a plan task, with outputs under the run's prefix."""
    arguments = ["step", task.step, "--config", task.config.model_dump_json(exclude_unset=True), "--output", output_uri(RUN_PREFIX, task)]
    for name, source in task.inputs.items():
        for source_id in [source] if isinstance(source, str) else source:
            arguments += ["--input", f"{name}={output_uri(RUN_PREFIX, plan[source_id])}"]
    return [*arguments, "--overwrite"]  # the prefix is this run's: a retry replaces only its own output


def pod_settings(task: Task, workflow: Workflow) -> dict[str, Any]:
    """KubernetesPodOperator arguments for a step: image, namespace, credentials, GPU and placement."""
    step, cluster = STEPS[task.step], workflow.cluster
    settings = {
        "image": image_for(step.image, repository=cluster.image_repository),
        "cmds": ["modelpress"],
        "namespace": cluster.namespace,
        "service_account_name": cluster.service_account,
        "env_from": [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=cluster.secret_name, optional=True))],
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",
        "node_selector": dict(cluster.gpu_node_selector if step.gpu else cluster.cpu_node_selector),
    }
    if step.gpu:
        settings["container_resources"] = k8s.V1ResourceRequirements(limits={cluster.gpu_resource: "1"})
        settings["tolerations"] = [
            k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in cluster.gpu_tolerations
        ]
    return settings


def step_operator(task_id: str, task: Task, workflow: Workflow, arguments: list[str] | list[list[str]], mapped: bool = False):
    """The operator of a plan task; `mapped` expands one operator over a list of argument lists (the targets)."""
    if mode() == "local":
        if mapped:
            return LocalStepOperator.partial(task_id=task_id).expand(arguments=arguments)
        return LocalStepOperator(task_id=task_id, arguments=arguments)
    workers = training_workers(task.step, task.config)
    if workers > 1:  # multi-worker training: this task creates a TFJob (chief + workers) and waits for it
        output = arguments[arguments.index("--output") + 1]
        command = [OUTPUT_PLACEHOLDER if a == output else a for a in arguments]
        image = image_for(STEPS[task.step].image, repository=workflow.cluster.image_repository)
        manifest = tfjob_manifest(f"{workflow.name}-{task_id}", workers=workers, image=image, arguments=command, cluster=workflow.cluster)
        return PythonOperator(task_id=task_id, python_callable=run_training_job, op_kwargs={"manifest": manifest, "output": output})
    settings = pod_settings(task, workflow)
    if mapped:
        with_result = [[*a, "--result", POD_RESULT] for a in arguments]
        return KubernetesPodOperator.partial(task_id=task_id, name=task_id, **settings).expand(arguments=with_result)
    return KubernetesPodOperator(task_id=task_id, name=task_id, arguments=[*arguments, "--result", POD_RESULT], **settings)


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


def fan_out_groups(plan: list[Task]) -> dict[str, list[Task]]:
    """Mapped task id -> the plan tasks it runs: each conversion target and the validation of its output."""
    converts = [t for t in plan if t.group == "convert"]
    ids = {t.id for t in converts}
    validations = [t for t in plan if t.step == "validate" and t.inputs.get("model") in ids]
    return {"convert": converts, "validate_convert": validations} if converts else {}


def gated(task: Task, source: str, by_id: dict[str, Task]) -> bool:
    """A non-validation step reading one validation (push, deploy) runs only if that validation blessed."""
    single = source in task.inputs.values()
    return single and STEPS[by_id[source].step].output == "validation" and STEPS[task.step].output != "validation"


def build_dag(workflow: Workflow, dag_id: str) -> DAG:
    plan = build_plan(workflow)
    by_id = {task.id: task for task in plan}
    groups = fan_out_groups(plan)
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
    operators: dict[str, Any] = {}  # plan task id -> the operator running it (mapped ones stand for their group)
    with dag:
        for mapped_id, members in groups.items():
            arguments = [step_arguments(member, by_id) for member in members]
            operator = step_operator(mapped_id, members[0], workflow, arguments, mapped=True)
            operators.update(dict.fromkeys((m.id for m in members), operator))
        for task in plan:
            if task.id not in operators:
                operators[task.id] = step_operator(task.id, task, workflow, step_arguments(task, by_id))
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
    """One DAG per *.yaml/*.yml in the workflows folder, keyed by DAG id (the file name)."""
    folder = folder or workflows_dir()
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


def install_workflow(path: Path, folder: Path) -> tuple[DAG, Path]:
    """Check that a workflow builds its DAG, then copy it into the workflows folder (`modelpress compile airflow`)."""
    dag = build_dag(load_workflow(path), path.stem)
    target = folder / f"{path.stem}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    if not (target.exists() and target.resolve() == path.resolve()):
        target.write_text(path.read_text())
    return dag, target
