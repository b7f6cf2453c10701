"""A workflow spec -> a Kubeflow pipeline, built from `plan.build_plan` (the same plan `modelpress run` executes).

- each plan task is a task of its step's component, displayed under the plan task id;
- the conversion targets fan out with `dsl.ParallelFor` (convert + validate per target, named like Airflow's); a
  target placed apart from the others (TensorRT: its own image, a GPU) runs as ordinary tasks under its plan ids;
- a task that reads one validation (deploy) runs under `dsl.If` on that validation's blessing; push reads them all
  and publishes only the blessed;
- each task runs in its placement's image (`plan.placement`: a GPU step in its set's CUDA variant); GPU tasks
  request `cluster.gpu_accelerator` x1 and get the GPU pool's node selector and tolerations; every task gets the S3
  credentials from `cluster.secret_name`; models and validations are cached, publishing always runs;
- pipeline parameters (PARAMETERS) override the matching config fields at run time; their defaults are the spec's.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from modelpress._core.plan import FAN_OUT_NAMES, Task, build_plan, placement, target_pairs
from modelpress._core.registry import STEPS
from modelpress._core.spec import Workflow, load_workflow
from modelpress._core.tfjob import training_workers

from .components import PARAMETERS, Parameter, output_name, returns_blessing, step_component
from .training_job import training_job_task

CACHED_OUTPUTS = ("model", "validation")
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MISSING = object()


def config_value(config: Any, path: str) -> Any:
    """The value at a dotted path of a config instance, or MISSING when the config has no such field."""
    node = config
    for key in path.split("."):
        if node is None or key not in getattr(type(node), "model_fields", {}):
            return MISSING
        node = getattr(node, key)
    return node


def applicable_path(parameter: Parameter, task: Task) -> str | None:
    return next((p for p in parameter.paths if config_value(task.config, p) is not MISSING), None)


def pipeline_parameters(plan: list[Task]) -> dict[Parameter, Any]:
    """Parameters for the fields the spec sets (unset gates stay unset), with the spec's value as the default."""
    found: dict[Parameter, Any] = {}
    for parameter in PARAMETERS:
        for task in plan:
            path = applicable_path(parameter, task)
            if path is not None and config_value(task.config, path) is not None:
                found[parameter] = config_value(task.config, path)
                break
    return found


def config_json(task: Task) -> str:
    return task.config.model_dump_json(exclude_unset=True)  # what the plan set; the step fills its own defaults


def configure_task(kfp_task, task: Task, workflow: Workflow, name: str) -> None:
    step, cluster = STEPS[task.step], workflow.cluster
    kfp_task.set_display_name(name)
    # A model or a validation is a function of its inputs and config: cached. Publishing (push, deploy) acts on
    # the world outside the pipeline root, so it runs every time.
    kfp_task.set_caching_options(step.output in CACHED_OUTPUTS)
    kubernetes.use_secret_as_env(kfp_task, secret_name=cluster.secret_name, secret_key_to_env=S3_SECRET_KEYS, optional=True)
    if placement(task).gpu and training_workers(task.step, task.config) == 1:  # a TFJob's replicas hold the GPUs, not its launcher
        kfp_task.set_accelerator_type(cluster.gpu_accelerator).set_accelerator_limit(1)
        for key, value in cluster.gpu_node_selector.items():
            kubernetes.add_node_selector(kfp_task, label_key=key, label_value=value)
        for toleration in cluster.gpu_tolerations:
            kubernetes.add_toleration(kfp_task, **toleration.model_dump(exclude_none=True))
    else:
        for key, value in cluster.cpu_node_selector.items():
            kubernetes.add_node_selector(kfp_task, label_key=key, label_value=value)


class PipelineBuilder:
    """Adds the plan's tasks to the pipeline being defined, in plan order."""

    def __init__(self, workflow: Workflow, plan: list[Task], parameters: dict[str, Any]):
        self.workflow, self.plan, self.parameters = workflow, plan, parameters
        self.by_id = {task.id: task for task in plan}
        self.kfp_tasks: dict[str, Any] = {}
        self.pairs = target_pairs(plan)
        self.fanned = {task.id for pair in self.pairs for task in pair}

    def output_of(self, task_id: str):
        return self.kfp_tasks[task_id].outputs[output_name(STEPS[self.by_id[task_id].step])]

    def arguments(self, task: Task, config) -> tuple[dict[str, Any], tuple[tuple[str, int, bool], ...]]:
        """The task's component arguments, and the shape of its list inputs (see components.list_input_names)."""
        arguments, shapes = {"config": config}, []
        for name, source in task.inputs.items():
            if isinstance(source, str):
                arguments[name] = self.output_of(source)
                continue
            collected = [s for s in source if s in self.fanned]
            singles = [s for s in source if s not in self.fanned]
            if collected:
                arguments[name] = dsl.Collected(self.output_of(collected[0]))
            for number, single in enumerate(singles, start=1):
                arguments[f"{name}_{number}"] = self.output_of(single)
            shapes.append((name, len(singles), bool(collected)))
        for parameter in pipeline_parameters([task]):
            if parameter.name in self.parameters:
                arguments[parameter.name] = self.parameters[parameter.name]
        return arguments, tuple(shapes)

    def add(self, task: Task, config=None, name: str | None = None):
        gates = [
            self.kfp_tasks[source].outputs["Output"]  # the blessing a validation component returns
            for source in task.inputs.values()
            if isinstance(source, str) and returns_blessing(STEPS[self.by_id[source].step]) and not returns_blessing(STEPS[task.step])
        ]
        arguments, shapes = self.arguments(task, config or config_json(task))
        with contextlib.ExitStack() as stack:
            for blessed in gates:
                stack.enter_context(dsl.If(blessed == True, name=f"{task.id}-if-blessed"))  # noqa: E712 (a KFP condition)
            where = placement(task)
            workers = training_workers(task.step, task.config)
            if workers > 1:  # multi-worker training: a task that runs a TFJob (pipelines/training_job.py)
                kfp_task = training_job_task(self.workflow, workers, where, arguments)
            else:
                kfp_task = step_component(task.step, where.image(self.workflow.cluster.image_repository), shapes)(**arguments)
        configure_task(kfp_task, task, self.workflow, name or task.id)
        self.kfp_tasks[task.id] = kfp_task

    def add_fan_out(self) -> None:
        """All conversion targets in one ParallelFor: each item carries its convert and validate configs. The two
        tasks are named like Airflow's mapped tasks (FAN_OUT_NAMES) and stand for every target's task."""
        pairs = self.pairs
        items = [{"convert": config_json(c), "validate": config_json(v)} for c, v in pairs]
        with dsl.ParallelFor(items, name="targets") as item:
            self.add(pairs[0][0], item.convert, FAN_OUT_NAMES[0])
            self.add(pairs[0][1], item.validate, FAN_OUT_NAMES[1])
        for convert, validation in pairs[1:]:
            self.kfp_tasks[convert.id], self.kfp_tasks[validation.id] = self.kfp_tasks[pairs[0][0].id], self.kfp_tasks[pairs[0][1].id]

    def build(self) -> None:
        """Plan order, with the fan-out added as soon as everything it reads exists (it reads validate_train,
        which the plan lists after the conversions)."""
        needs = {s for t in self.plan if t.id in self.fanned for s in t.sources()} - self.fanned
        pending = bool(self.pairs)
        for task in self.plan:
            if pending and needs <= self.kfp_tasks.keys():
                self.add_fan_out()
                pending = False
            if task.id not in self.fanned:
                self.add(task)
        if pending:
            self.add_fan_out()


def build_pipeline(workflow: Workflow):
    """The workflow's pipeline (a KFP GraphComponent); its parameters appear in the Kubeflow UI."""
    plan = build_plan(workflow)
    defaults = pipeline_parameters(plan)

    def pipeline(*values):
        PipelineBuilder(workflow, plan, {p.name: v for p, v in zip(defaults, values, strict=True)}).build()

    pipeline.__signature__ = inspect.Signature(
        [
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=p.type)
            for p, value in defaults.items()
        ]
    )
    pipeline.__name__ = workflow.name.replace("-", "_")
    return dsl.pipeline(name=workflow.name, description=workflow.description or f"ModelPress workflow {workflow.name}")(pipeline)


def compile_workflow(workflow_path: str | Path, output: str | Path) -> Path:
    """Compile a workflow YAML to the KFP IR YAML a user uploads in the Kubeflow UI."""
    workflow = load_workflow(workflow_path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(workflow), str(output))
    return output

