"""Build Airflow DAGs from workflow specs via `plan.build_plan` (the plan `modelpress run` and Kubeflow use).

Every plan task runs `modelpress step STEP --config ... --input ... --output ...` in a step operator
(`operators.py`: a pod in the task's image on the cluster, or a subprocess in local mode).
Outputs live under <run_root>/<dag id>/<run id>/, and every step overwrites its own output, so a retried task
repeats its work without touching other runs. Conversion targets fan out with dynamic task mapping, one mapped task
group per image they run in (`plan.fan_outs`), each running a target's convert and validation; a target that skips
(no GPU here) skips only its own. A last task, `report`, writes the run's summary.json, report.md (the model card) and
report.html under the run's prefix from every validation. Train and push declare the data and the release they read
and write as inlets and outlets (Assets) for lineage tools. This module imports no TensorFlow: it reads specs and the registry only.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import (
    ShortCircuitOperator,
)
from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    task_group,
)

from modelpress.airflow.operators import mode, report_operator, step_command, step_operator, with_result
from modelpress.common.errors import UserError
from modelpress.contract.workflow import Workflow
from modelpress.execution.parameters import RunParameter, run_parameters, step_parameters
from modelpress.execution.plan import FanOut, Task, build_plan, fan_outs, load_workflow
from modelpress.execution.runner import output_uri
from modelpress.io.releases import release_asset_uri
from modelpress.kubernetes.pods import check_cluster_workflow, check_credentials
from modelpress.steps.catalog import STEPS

WORKFLOWS_ENV = "MODELPRESS_WORKFLOWS_DIR"  # overrides the folder the DAG file names (the workflows/ beside it)
RUN_ROOT_ENV = "MODELPRESS_RUN_ROOT"  # default of the DAG's run_root parameter
DEFAULT_RUN_ROOT = "s3://modelpress/runs"
RUN_PREFIX = "{{ params.run_root }}/{{ dag.dag_id }}/{{ run_id }}"
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


PARAM_TYPES = {str: "string", int: "integer", float: "number"}


def dag_params(parameters: list[RunParameter]) -> dict[str, Param]:
    """The form of a triggered run: where runs go, and the run parameters Kubeflow's pipeline has (same names,
    defaults and descriptions)."""
    run_root = Param(os.environ.get(RUN_ROOT_ENV, DEFAULT_RUN_ROOT), type="string", description="s3:// prefix or folder runs go to")
    return {"run_root": run_root} | {
        p.name: Param(p.default, type=PARAM_TYPES[p.parameter.type], description=p.description) for p in parameters
    }


def step_arguments(task: Task, plan: dict[str, Task], parameters: list[RunParameter]) -> list[str]:
    """The `modelpress step` arguments of a plan task, with outputs under the run's prefix and the run parameters
    its step has as overrides."""
    inputs = {
        name: output_uri(RUN_PREFIX, plan[source]) if isinstance(source, str) else [output_uri(RUN_PREFIX, plan[s]) for s in source]
        for name, source in task.inputs.items()
    }
    its_own = {p.path for p in step_parameters(STEPS[task.step])}
    overrides = [
        argument
        for parameter in (p.parameter for p in parameters if p.parameter.path in its_own)
        for argument in ("--set", f"{parameter.path}={{{{ params.{parameter.name} | tojson }}}}")
    ]
    return [*step_command(task.step, task.config.model_dump_json(exclude_unset=True), inputs, output_uri(RUN_PREFIX, task)), *overrides]


def list_input_sources(task: Task, arguments: list[str], producers: dict[str, tuple[str, int | None]]):
    """Positions of the task's list-input URIs in its arguments -> the (Airflow task id, map index) writing each."""
    positions = [i + 1 for i, a in enumerate(arguments) if a == "--input"]  # step_arguments' order: task.sources()
    names = [name for name, source in task.inputs.items() for _ in ([source] if isinstance(source, str) else source)]
    listed = STEPS[task.step].list_inputs
    return {p: producers[s] for p, s, name in zip(positions, task.sources(), names, strict=True) if name in listed}


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


def add_fan_out(dag: DAG, fan_out: FanOut, by_id: dict[str, Task], workflow: Workflow, parameters: list[RunParameter]) -> dict[str, Any]:
    """One image's targets as a mapped task group: map index i runs target i's convert, then its validation, so a
    skipped or failed target stops only its own validation, and is shown under the target's name. Task ids
    FanOut.names (KFP uses the same)."""
    pairs, names = fan_out.pairs, fan_out.names

    @task_group(group_id=fan_out.group, prefix_group_id=False)
    def targets(convert: list[str], validate: list[str], target: str) -> None:
        step_operator(names[0], pairs[0][0], workflow, convert, target) >> step_operator(names[1], pairs[0][1], workflow, validate, target)

    targets.expand_kwargs(
        [
            {
                "convert": with_result(step_arguments(c, by_id, parameters)),
                "validate": with_result(step_arguments(v, by_id, parameters)),
                "target": v.artifact,
            }
            for c, v in pairs
        ]
    )
    return {task.id: dag.get_task(names[i]) for pair in pairs for i, task in enumerate(pair)}


def add_report(workflow: Workflow, plan: list[Task], operators: dict[str, Any], producers: dict[str, tuple[str, int | None]]) -> None:
    """The run's report of every validation (summary.json, report.md, report.html under the run's prefix), after
    push when there is one."""
    validations = [task for task in plan if STEPS[task.step].output == "validation"]  # a search's selection too
    arguments = ["report", "--name", workflow.name, "--output", RUN_PREFIX]
    for task in validations:
        arguments += ["--validation", output_uri(RUN_PREFIX, task)]
    report = report_operator(workflow, arguments)
    positions = [i + 1 for i, argument in enumerate(arguments) if argument == "--validation"]
    report.list_sources = {position: producers[task.id] for position, task in zip(positions, validations, strict=True)}
    upstream = {id(operators[task.id]): operators[task.id] for task in [*validations, *(t for t in plan if t.step == "push")]}
    for operator in upstream.values():
        operator >> report


def asset_of(uri: str, **extra: Any) -> Asset:
    """An Asset naming a storage URI (a local folder as file://), as lineage tools read it."""
    return Asset(uri if "://" in uri else Path(uri).absolute().as_uri(), extra=extra)


def declare_lineage(task: Task, operator) -> None:
    """OpenLineage-style inlets and outlets: training reads the data URI; push publishes the model's releases in its
    registry (a fixed push.uri only: the default registry is under each run's prefix)."""
    data_uri = getattr(task.config.data, "path", None) if task.step == "train" else None
    if data_uri:
        operator.inlets = [asset_of(data_uri)]
    if task.step == "push" and task.config.push.uri:  # releases.release_asset_uri: what other DAGs schedule on
        spec = task.config.push
        operator.outlets = [Asset(release_asset_uri(spec.uri, spec.model_name), extra={"model": spec.model_name, "registry": spec.uri})]


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
    parameters = run_parameters(plan)
    dag = DAG(
        dag_id=dag_id,
        description=workflow.description or f"ModelPress workflow {workflow.name}",
        schedule=schedule_of(workflow),
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params=dag_params(parameters),
        tags=["modelpress"],
    )
    with dag:
        # plan task id -> the operator running it (the fan-out's two stand for every target's tasks)
        operators: dict[str, Any] = {}
        for fan_out in groups:
            operators |= add_fan_out(dag, fan_out, by_id, workflow, parameters)
        producers = {task.id: (task.id, None) for task in plan} | {
            task.id: (fan_out.names[i], number)
            for fan_out in groups
            for number, pair in enumerate(fan_out.pairs)
            for i, task in enumerate(pair)
        }
        for task in plan:
            if task.id not in operators:
                arguments = step_arguments(task, by_id, parameters)
                operators[task.id] = step_operator(task.id, task, workflow, arguments)
                operators[task.id].list_sources = list_input_sources(task, arguments, producers)
                declare_lineage(task, operators[task.id])
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
        add_report(workflow, plan, operators, producers)
    return dag


class InvalidWorkflows(DAG):
    """Stands for the workflow files that failed to load: Airflow keeps the DAGs of this file that validate and
    records an import error for one that does not, so each bad file is reported and the good ones still load."""

    def validate(self):
        raise UserError(self.description)


def workflow_dags(folder: Path | None = None, default: Path | None = None) -> dict[str, DAG]:
    """One DAG per *.yaml/*.yml in the workflows folder, keyed by DAG id (the file name): `folder`, else
    $MODELPRESS_WORKFLOWS_DIR, else `default` (the DAG file passes the workflows/ folder beside it)."""
    folder = folder or (Path(os.environ[WORKFLOWS_ENV]) if os.environ.get(WORKFLOWS_ENV) else default)
    if folder is None:
        raise UserError(f"no workflows folder: pass one to workflow_dags() or set {WORKFLOWS_ENV}")
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
