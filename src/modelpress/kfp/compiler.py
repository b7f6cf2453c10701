"""A workflow spec -> a Kubeflow pipeline, built from `plan.build_plan` (the same plan `modelpress run` executes).

- each plan task is a task of its step's component, displayed under the plan task id;
- the conversion targets fan out with `dsl.ParallelFor`, one per image they run in (`plan.fan_outs`: convert +
  validate per target, named like Airflow's);
- a task that reads one validation (deploy) runs under `dsl.If` on that validation's blessing; push reads them all
  and publishes only the blessed;
- each task runs in its placement's image (`plan.placement`: the image carrying its step's and its target's needs,
  a GPU step in its set's CUDA variant); GPU tasks request one GPU (on Kubeflow the accelerator is the resource name,
  `settings.gpu_resource`, which KFP's driver makes the limit's name) and get the GPU pool's node selector and
  tolerations (`pods.pod_placement`, as Airflow and the TFJob); every task gets its step's CPU and memory requests
  and limits and its timeout (the pod's activeDeadlineSeconds) from `catalog.step_resources`, and the S3 credentials
  from the Secret `kubernetes.secret_name`, which must exist; KFP retries any failure (user errors too), so only the
  steps whose failures are mostly transient (push, deploy) get a retry policy; models and validations are cached,
  publishing always runs;
- the run's first task, `data_digest` (never cached), digests the data (`io.data.source_digest`); every task that
  reads the data takes that digest as an input, so new data at the same path misses the cache;
- a last task, `report`, reads every validation and writes the run's summary.json, HTML report and Markdown model
  card (after push, so a run's report comes once its release exists);
- pipeline parameters (`execution.parameters`, the same as the Airflow DAG's Params) override the matching config
  fields at run time; their defaults are the spec's values, their descriptions the config fields'.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from modelpress.contract.images import Placement
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.contract.schema import CREDENTIAL_FIELDS
from modelpress.contract.workflow import Workflow
from modelpress.execution.driver import AFTER_INPUT
from modelpress.execution.parameters import MISSING, RunParameter, field_at, run_parameters
from modelpress.execution.plan import FanOut, Task, build_plan, fan_outs, load_workflow, placement
from modelpress.execution.runner import REPORT_PLACEMENT
from modelpress.kubernetes.katib import katib_tunes
from modelpress.kubernetes.pods import PodPlacement, check_cluster_workflow, job_waiter_resources, pod_placement
from modelpress.kubernetes.tfjob import training_workers
from modelpress.steps.catalog import STEPS, StepSpec, step_resources

from .components import output_name, report_component, returns_blessing, step_component
from .data_digest import data_digest_component
from .katib_experiment import katib_task
from .training_job import training_job_task

CACHED_OUTPUTS = ("model", "validation", "search")
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
def config_json(task: Task) -> str:
    return task.config.model_dump_json(exclude_unset=True)  # what the plan set; the step fills its own defaults


def use_s3_secret(kfp_task, settings: KubernetesSpec) -> None:
    """Required: a missing Secret stops the pod at start with "secret not found", not late in the step as "no credentials"."""
    kubernetes.use_secret_as_env(kfp_task, secret_name=settings.secret_name, secret_key_to_env=S3_SECRET_KEYS, optional=False)


def configure_task(kfp_task, task: Task, workflow: Workflow, name: str) -> None:
    step, settings = STEPS[task.step], workflow.kubernetes
    kfp_task.set_display_name(name)
    # A model or a validation is a function of its inputs and config: cached. Publishing (push, deploy) acts on
    # the world outside the pipeline root, so it runs every time.
    kfp_task.set_caching_options(step.output in CACHED_OUTPUTS)
    # A TFJob's replicas and a Katib Experiment's trials hold the GPUs, CPU and memory, not the task that launches them.
    if training_workers(task.step, task.config) > 1 or katib_tunes(task.step, settings):
        where = pod_placement(Placement("base", False), settings, job_waiter_resources(settings))
    else:
        where = pod_placement(placement(task), settings, step_resources(task.step, settings))
    set_pod_options(kfp_task, step, settings, where)


def set_pod_options(kfp_task, step: StepSpec, settings: KubernetesSpec, where: PodPlacement) -> None:
    """The S3 Secret, GPU, CPU and memory, timeout, retries and node placement of a step's KFP task."""
    use_s3_secret(kfp_task, settings)
    if where.accelerator:
        kfp_task.set_accelerator_type(where.accelerator).set_accelerator_limit(1)
    for resource in ("cpu", "memory"):  # set_cpu_request, set_memory_limit, ...
        if resource in where.requests:
            getattr(kfp_task, f"set_{resource}_request")(where.requests[resource])
        if resource in where.limits:
            getattr(kfp_task, f"set_{resource}_limit")(where.limits[resource])
    if where.timeout_seconds:
        kubernetes.set_timeout(kfp_task, where.timeout_seconds)  # the pod's activeDeadlineSeconds
    # KFP retries whatever failed, a user error (exit 2) included: only steps whose failures are mostly transient.
    if step.retried_on_kubeflow:
        kfp_task.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2, backoff_max_duration="600s")
    for key, value in where.node_selector.items():
        kubernetes.add_node_selector(kfp_task, label_key=key, label_value=value)
    for toleration in where.tolerations:
        kubernetes.add_toleration(kfp_task, **toleration)


class PipelineBuilder:
    """Adds the plan's tasks to the pipeline being defined, in plan order."""

    def __init__(self, workflow: Workflow, plan: list[Task], parameters: dict[str, Any]):
        self.workflow, self.plan, self.parameters = workflow, plan, parameters
        self.by_id = {task.id: task for task in plan}
        self.kfp_tasks: dict[str, Any] = {}
        self.fan_outs = fan_outs(plan)
        self.fan_out_of = {task.id: fan_out for fan_out in self.fan_outs for pair in fan_out.pairs for task in pair}
        self.data_digests: dict[str, Any] = {}  # data spec JSON -> the data_digest task of that data

    def add_data_digests(self) -> None:
        """One uncached data_digest task per data spec the plan reads (a workflow has one), before every step."""
        settings = self.workflow.kubernetes
        storage = self.workflow.storage.model_dump_json(exclude=set(CREDENTIAL_FIELDS), exclude_unset=True)
        for task in self.plan:
            data = field_at(task.config, "data")[0]
            if data is MISSING or data.model_dump_json() in self.data_digests:
                continue
            arguments = {"data": data.model_dump_json(), "storage": storage}
            if "data_uri" in self.parameters and field_at(task.config, "data.path")[0] not in (MISSING, None):
                arguments["data_uri"] = self.parameters["data_uri"]
            digest = data_digest_component(settings.image_repository, settings.image_tag)(**arguments)
            digest.set_display_name("data_digest").set_caching_options(False)
            use_s3_secret(digest, settings)
            self.data_digests[data.model_dump_json()] = digest

    def output_of(self, task_id: str):
        return self.kfp_tasks[task_id].outputs[output_name(STEPS[self.by_id[task_id].step])]

    def arguments(self, task: Task, config) -> tuple[dict[str, Any], tuple[tuple[str, int, tuple[str, ...]], ...]]:
        """The task's component arguments, and the shape of its list inputs (see components.list_input_names)."""
        arguments, shapes = {"config": config}, []
        for name, source in task.inputs.items():
            if isinstance(source, str):
                arguments[name] = self.output_of(source)
                continue
            listed, shape = self.list_arguments(name, source)
            arguments |= listed
            shapes.append(shape)
        for parameter in run_parameters([task]):
            if parameter.name in self.parameters:
                arguments[parameter.name] = self.parameters[parameter.name]
        data = field_at(task.config, "data")[0]
        if data is not MISSING:  # a key of the cache only: the step reads the data itself
            arguments["data_digest"] = self.data_digests[data.model_dump_json()].output
        return arguments, tuple(shapes)

    def list_arguments(self, name: str, sources: list[str]) -> tuple[dict[str, Any], tuple[str, int, tuple[str, ...]]]:
        """A list input's component arguments and shape (components.list_input_names)."""
        arguments = {}
        collected = list(dict.fromkeys(self.fan_out_of[s] for s in sources if s in self.fan_out_of))
        singles = [s for s in sources if s not in self.fan_out_of]
        for fan_out in collected:  # the ParallelFor's outputs, gathered: one per fan-out's validations
            arguments[f"{name}_{fan_out.identifier}"] = dsl.Collected(self.output_of(fan_out.pairs[0][1].id))
        for number, single in enumerate(singles, start=1):
            arguments[f"{name}_{number}"] = self.output_of(single)
        return arguments, (name, len(singles), tuple(f.identifier for f in collected))

    def add_report(self) -> None:
        """The run's report of every validation, after publishing (it shows what was published)."""
        validations = [t.id for t in self.plan if STEPS[t.step].output == "validation"]  # a search's selection too
        arguments, shape = self.list_arguments("validations", validations)
        settings = self.workflow.kubernetes
        kfp_task = report_component(REPORT_PLACEMENT.image(settings.image_repository, settings.image_tag), shape)(
            name=self.workflow.name, **arguments
        )
        kfp_task.set_display_name("report").set_caching_options(False)
        # the report reads every validation, as validate reads one: validate's CPU, memory and time
        set_pod_options(kfp_task, STEPS["validate"], settings, pod_placement(REPORT_PLACEMENT, settings, step_resources("validate", settings)))
        for push in (t for t in self.plan if t.step == "push"):
            kfp_task.after(self.kfp_tasks[push.id])

    def add(self, task: Task, config=None, name: str | None = None):
        gates = [
            self.kfp_tasks[source].outputs["Output"]  # the blessing a validation component returns
            for source in task.inputs.values()
            if isinstance(source, str) and returns_blessing(STEPS[self.by_id[source].step]) and not returns_blessing(STEPS[task.step])
        ]
        arguments, shapes = self.arguments(task, config or config_json(task))
        settings = self.workflow.kubernetes
        with contextlib.ExitStack() as stack:
            for blessed in gates:
                stack.enter_context(dsl.If(blessed == True, name=f"{task.id}-if-blessed"))  # noqa: E712 (a KFP condition)
            where = placement(task)
            workers = training_workers(task.step, task.config)
            if workers > 1:  # multi-worker training: a task that runs a TFJob (pipelines/training_job.py)
                kfp_task = training_job_task(self.workflow, workers, where, arguments)
            elif katib_tunes(task.step, settings):  # tune as a Katib Experiment (kfp/katib_experiment.py)
                kfp_task = katib_task(self.workflow, task.config, where, arguments)
            else:
                image = where.image(settings.image_repository, settings.image_tag)
                kfp_task = step_component(task.step, image, shapes, AFTER_INPUT in task.inputs)(**arguments)
        configure_task(kfp_task, task, self.workflow, name or task.id)
        self.kfp_tasks[task.id] = kfp_task

    def add_fan_out(self, fan_out: FanOut) -> None:
        """The targets of one image in one ParallelFor: each item carries its convert and validate configs. The two
        tasks stand for every target's task; they are displayed as Airflow's mapped tasks are named (FanOut.names)
        with the targets they run, e.g. "convert_tf (tflite_int8, onnx)", since one display name serves every item."""
        pairs = fan_out.pairs
        items = [{"convert": config_json(c), "validate": config_json(v)} for c, v in pairs]
        targets = ", ".join(validation.artifact for _, validation in pairs)
        with dsl.ParallelFor(items, name=fan_out.group) as item:
            self.add(pairs[0][0], item.convert, f"{fan_out.names[0]} ({targets})")
            self.add(pairs[0][1], item.validate, f"{fan_out.names[1]} ({targets})")
        for convert, validation in pairs[1:]:
            self.kfp_tasks[convert.id], self.kfp_tasks[validation.id] = self.kfp_tasks[pairs[0][0].id], self.kfp_tasks[pairs[0][1].id]

    def build(self) -> None:
        """Plan order, with each fan-out added as soon as everything it reads exists (it reads validate_train,
        which the plan lists after the conversions)."""
        self.add_data_digests()
        pending = list(self.fan_outs)
        for task in [*self.plan, None]:
            for fan_out in list(pending):
                members = {t.id for pair in fan_out.pairs for t in pair}
                needs = {s for pair in fan_out.pairs for t in pair for s in t.sources()} - members
                if needs <= self.kfp_tasks.keys() or task is None:
                    self.add_fan_out(fan_out)
                    pending.remove(fan_out)
            if task is not None and task.id not in self.fan_out_of:
                self.add(task)
        self.add_report()


def parameters_docstring(parameters: list[RunParameter]) -> str:
    lines = [f"    {p.name}: {' '.join(p.description.split())}" for p in parameters]
    return "\n".join(["Run parameters.", "", "Args:", *lines]) if lines else ""


def build_pipeline(workflow: Workflow):
    """The workflow's pipeline (a KFP GraphComponent); its parameters appear in the Kubeflow UI."""
    check_cluster_workflow(workflow)
    plan = build_plan(workflow)
    parameters = run_parameters(plan)

    def pipeline(*values):
        PipelineBuilder(workflow, plan, {p.name: v for p, v in zip(parameters, values, strict=True)}).build()

    pipeline.__signature__ = inspect.Signature(
        [
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=p.parameter.type)
            for p in parameters
        ]
    )
    pipeline.__doc__ = parameters_docstring(parameters)  # KFP makes each argument's text its input's description
    pipeline.__name__ = workflow.name.replace("-", "_")
    return dsl.pipeline(name=workflow.name, description=workflow.description or f"ModelPress workflow {workflow.name}")(pipeline)


def compile_workflow(workflow_path: str | Path, output: str | Path) -> Path:
    """Compile a workflow YAML to the KFP IR YAML a user uploads in the Kubeflow UI."""
    pipeline = build_pipeline(load_workflow(workflow_path))  # every check first: a refused workflow writes nothing
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(output))
    return output

