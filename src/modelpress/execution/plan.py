"""From a workflow spec to the ordered list of step invocations. The local runner, the Kubeflow pipeline and the
Airflow DAG are all built from this one plan, so they cannot disagree about what runs and in which order.

[tune ->] train -> compress techniques in order (each feeds the next, or starts from train or an earlier one with
`from:`) -> convert per target of the final model -> validate every model artifact
(gated against the trained model) -> push the blessed ones -> deploy the final SavedModel.
A post-training quantize entry (mode dynamic, int8, fp16) is not a Keras step: it adds a TFLite conversion target.

With a `search:` section instead of compress, each rung of its ladder is such a branch from the trained model (its
task ids and artifacts named <rung>-...), preceded by a `search` task that skips the rung when an earlier artifact
already meets the target: its first tasks read that task as their `after` input, so they skip with it in every
executor, before any training. A last `select` task picks the artifact that push and deploy publish.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from modelpress.common.errors import UserError
from modelpress.contract.compression import TargetSpec, TechniqueSpec
from modelpress.contract.formats import FORMATS, POST_TRAINING_TARGETS
from modelpress.contract.images import Placement, placement_for
from modelpress.contract.schema import spec_hash, unknown_key_message
from modelpress.contract.search import rung_artifact
from modelpress.contract.training import MODEL_PARAM_PREFIX, ModelSpec
from modelpress.contract.workflow import Workflow, read_workflow
from modelpress.contract.yaml_input import yaml_line
from modelpress.execution.driver import AFTER_INPUT
from modelpress.ml.models import ZOO, check_params
from modelpress.steps.catalog import STEPS, get_step, step_resources

# Workflow sections a step config receives when it has a field of the same name.
SHARED_SECTIONS = ("model", "data", "train", "tune", "search", "gates", "evaluation", "storage", "push", "serving")


@dataclass
class Task:
    id: str  # unique in the plan: also the KFP task name and the Airflow task id
    step: str  # registry name
    config: BaseModel
    # input name -> id of the task whose output it reads, or a list of ids (e.g. push reads every validation)
    inputs: dict[str, str | list[str]] = field(default_factory=dict)
    artifact: str | None = None  # the model artifact's name in reports (model-producing and validate tasks)
    group: str | None = None  # tasks that fan out over targets share a group ("convert", "validate")
    target: str | None = None  # the conversion target (format) a convert task makes and its validation checks
    rung: str | None = None  # the search rung whose branch the task belongs to

    @property
    def output_kind(self) -> str:
        return STEPS[self.step].output

    def sources(self) -> list[str]:
        """Every task id this task reads from."""
        return [s for v in self.inputs.values() for s in ([v] if isinstance(v, str) else v)]


def step_config(step: str, workflow: Workflow, params: dict[str, Any], where: str, keys: tuple = ()) -> BaseModel:
    """A step's config: the shared workflow sections it declares, then the step's own parameters from the spec."""
    config_class = get_step(step).config
    values = {
        name: getattr(workflow, name)
        for name in SHARED_SECTIONS
        if name in config_class.model_fields and getattr(workflow, name) is not None
    }
    values.update(params)
    try:
        return config_class.model_validate({k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in values.items()})
    except ValidationError as exc:
        from modelpress.contract.yaml_input import describe_validation_error

        raise UserError(describe_validation_error(exc, params, where, None), keys) from None


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow YAML file, then build its plan: step parameters, model parameters and `from:`
    references are what only the plan can check. Every problem is a UserError naming file, line and key."""
    workflow, text = read_workflow(path)
    try:
        build_plan(workflow)
    except UserError as exc:
        line = yaml_line(text, list(exc.keys)) if exc.keys else None
        raise UserError(f"{path}{f' line {line}' if line else ''}: {exc}") from None
    return workflow


def check_tuned_model_params(workflow: Workflow) -> None:
    """Tuned model parameters must be ones the zoo model takes (a builder's are checked when it is built)."""
    if workflow.tune is None or workflow.model.zoo is None:
        return
    space = workflow.tune.space
    tuned = {n.removeprefix(MODEL_PARAM_PREFIX): None for n in space if n.startswith(MODEL_PARAM_PREFIX)}
    try:
        check_params(ZOO[workflow.model.zoo], tuned, workflow.model.zoo)
    except UserError as exc:
        raise UserError(f"tune: space: {exc}", ("tune", "space")) from None


def build_plan(workflow: Workflow) -> list[Task]:
    check_tuned_model_params(workflow)
    for name in workflow.kubernetes.resources:  # a step name, and requests within limits once merged with its defaults
        step_resources(name, workflow.kubernetes)
    tasks: list[Task] = []
    if workflow.tune is not None:  # the search runs first; train reads its best.json
        tasks.append(Task("tune", "tune", step_config("tune", workflow, {}, "tune")))
    train_inputs = {"hyperparameters": "tune"} if workflow.tune is not None else {}
    tasks.append(Task("train", "train", step_config("train", workflow, {}, "train"), train_inputs, artifact="train"))
    architecture: dict[str, ModelSpec] = {"train": workflow.model}  # model task id -> the spec its Keras model is built from
    if workflow.search is None:
        models, last = add_branch(tasks, workflow, Branch(workflow.compress), architecture)
        add_validations(tasks, workflow, [("train", None), *models], architecture)
        published = [t.id for t in tasks if t.step == "validate"]
        served = {"model": last, "validation": f"validate_{last}"}
    else:
        selection = add_search(tasks, workflow, architecture)
        published, served = [selection], {"validation": selection}  # deploy serves the artifact the search selected
    if workflow.push is not None:
        config = step_config("push", workflow, {"workflow_hash": spec_hash(workflow)}, "push")
        tasks.append(Task("push", "push", config, {"validations": published}))
    if workflow.serving is not None:
        # What the server runs: the final Keras model of compress, or the search's selection; with push, its version number.
        inputs = {**served, **({"release": "push"} if workflow.push else {})}
        tasks.append(Task("deploy", "deploy", step_config("deploy", workflow, {}, "deploy"), inputs))
    check_acyclic(tasks)
    return tasks


@dataclass(frozen=True)
class Branch:
    """A compress list and where it sits: the workflow's own, or a rung of the search ladder (whose task ids and
    artifacts carry the rung's name, and whose first tasks wait for the search task deciding whether it runs)."""

    compress: list[TechniqueSpec]
    label: str = "compress"  # how messages name the list
    keys: tuple = ("compress",)  # where it is in the YAML, for the line of an error
    rung: str | None = None
    after: str | None = None  # the search task the branch's first tasks wait for

    def name(self, name: str) -> str:
        return rung_artifact(self.rung, name) if self.rung else name


def add_branch(tasks: list[Task], workflow: Workflow, branch: Branch, architecture: dict[str, ModelSpec]) -> tuple[list[tuple[str, str]], str]:
    """Append a compress list's tasks (from the trained model) and the conversions of its final model to the
    workflow's targets: ([(model task id, parent task id)], the final Keras model's task id)."""
    sources = compress_sources(branch)
    models: list[tuple[str, str]] = []
    last = "train"  # the final model: the last Keras entry of compress, what targets convert and deploy serves
    targets = list(workflow.targets)

    def waiting(inputs: dict[str, str], source: str) -> dict[str, str]:
        return {**inputs, AFTER_INPUT: branch.after} if branch.after and source == "train" else inputs

    for index, technique in enumerate(branch.compress):
        name = technique.technique
        where, keys = f"{branch.label}[{index}]", (*branch.keys, index)
        if name not in STEPS:
            raise UserError(f"{where}: technique '{name}' is not available in this ModelPress version", keys)
        if index not in sources:
            targets = with_post_training_target(workflow, branch, index, targets)
            continue
        task_id, source = sources[index]
        check_technique_keys(technique, where, keys)
        params = {**technique.params, **loads_model(name, architecture[source], workflow)}
        config = step_config(name, workflow, params, f"{where} ({name})", keys)
        # What the task's output is built from: a distilled student is its own architecture (maybe another builder's).
        architecture[task_id] = ModelSpec.model_validate(technique.params["student"]) if name == "distill" else architecture[source]
        input_name = STEPS[name].inputs[0]
        tasks.append(Task(task_id, name, config, waiting({input_name: source}, source), artifact=task_id, rung=branch.rung))
        models.append((task_id, source))
        last = task_id
    for position, target in enumerate(targets):
        if target.format == "saved_model":
            continue  # every Keras artifact already carries its SavedModel
        if "convert" not in STEPS:
            raise UserError(f"target '{target.format}' needs the convert step, not available in this ModelPress version")
        params = {"format": target.format, "on_unavailable": target.on_unavailable, **target.options, **loads_model("convert", architecture[last], workflow)}
        keys = ("targets", position) if position < len(workflow.targets) else ()  # past the list: added by quantize
        config = step_config("convert", workflow, params, f"targets ({target.format})", keys)
        task_id = branch.name(f"convert_{target.format}")
        tasks.append(Task(task_id, "convert", config, waiting({"model": last}, last), artifact=branch.name(target.format), group="convert",
                          target=target.format, rung=branch.rung))  # fmt: skip
        models.append((task_id, last))
    return models, last


def add_validations(tasks: list[Task], workflow: Workflow, models: list[tuple[str, str | None]], architecture: dict[str, ModelSpec]) -> None:
    """A validation of each model task, gated against the trained model and compared with its parent's."""
    for task_id, parent in models:
        model = next(t for t in tasks if t.id == task_id)
        # A rejection's per-layer sensitivity loads the parent: the model section it is built from.
        parent_model = loads_model("validate", architecture[parent], workflow) if parent is not None else {}
        config = step_config("validate", workflow, {"name": model.artifact, **parent_model}, "validate")
        inputs = {"model": task_id}
        if parent is not None:
            inputs.update(parent=f"validate_{parent}", baseline="validate_train")
        tasks.append(Task(f"validate_{task_id}", "validate", config, inputs, artifact=model.artifact, group="validate",
                          target=model.target, rung=model.rung))  # fmt: skip


def add_search(tasks: list[Task], workflow: Workflow, architecture: dict[str, ModelSpec]) -> str:
    """The ladder: before each rung a search task reads every validation so far and skips (and with it the rung)
    when one already meets the target; each rung is the branch its compress list makes; last, `select` picks the
    artifact to publish. Returns the id of the task push and deploy read."""
    search = workflow.search
    add_validations(tasks, workflow, [("train", None)], architecture)
    for index, rung in enumerate(search.ladder):
        gate = f"search_{rung.name}"
        validations = [t.id for t in tasks if t.step == "validate"]
        config = step_config("search", workflow, {"rung": rung.name}, f"search.ladder[{index}]", ("search", "ladder", index))
        tasks.append(Task(gate, "search", config, {"validations": validations}, rung=rung.name))
        branch = Branch(rung.compress, f"search.ladder[{index}].compress", ("search", "ladder", index, "compress"), rung.name, gate)
        models, _ = add_branch(tasks, workflow, branch, architecture)
        add_validations(tasks, workflow, models, architecture)
    made = {t.target or "saved_model" for t in tasks if t.step == "validate"}
    if search.target.format is not None and search.target.format not in made:
        raise UserError(
            f"search.target.format {search.target.format}: no rung makes it; add it to targets (every rung's final model "
            "is converted to them)",
            ("search", "target", "format"),
        )
    validations = [t.id for t in tasks if t.step == "validate"]
    tasks.append(Task("select", "select", step_config("select", workflow, {}, "search"), {"validations": validations}))
    return "select"


def loads_model(step: str, spec: ModelSpec, workflow: Workflow) -> dict[str, Any]:
    """The `model` a step that loads a Keras artifact gets, when it is not the workflow's own (a distilled student):
    the loader imports layer modules only from that spec's builder package."""
    return {"model": spec} if spec is not workflow.model and "model" in get_step(step).config.model_fields else {}


def check_technique_keys(technique: TechniqueSpec, where: str, keys: tuple) -> None:
    """A compress entry holds its step's own parameters; the shared sections come from the workflow."""
    own = set(get_step(technique.technique).config.model_fields) - set(SHARED_SECTIONS)
    for key in technique.params:
        if key not in own:
            message = unknown_key_message(key, own | {"technique", "from"})
            raise UserError(f"{where} ({technique.technique}): {message}", (*keys, key))


def is_post_training(technique: TechniqueSpec) -> bool:
    return technique.technique == "quantize" and technique.params.get("mode") in POST_TRAINING_TARGETS


def compress_sources(branch: Branch) -> dict[int, tuple[str, str]]:
    """compress index -> (task id, id of the task it starts from) for every entry that is a Keras step.

    The task id is the technique's name (name_N for a repeat at entry N-1; in a search rung prefixed with the rung's
    name), also the artifact's name in reports. An entry starts from the previous one unless `from:` names train or
    an earlier entry, so one workflow can compare techniques side by side (prune and distill both from train). A
    `from:` that points forward is refused at plan time, in the runner, the KFP compiler and the DAG parser alike;
    when it closes a loop the error spells the loop out.
    """
    compress = branch.compress
    entries = [(index, t) for index, t in enumerate(compress) if not is_post_training(t)]
    ids: dict[int, str] = {}
    for index, technique in entries:
        name = technique.technique
        ids[index] = name if name not in ids.values() else f"{name}_{index + 1}"
    position = {task_id: index for index, task_id in ids.items()}
    previous = dict(zip(ids, ["train", *ids.values()], strict=False))  # the default: a chain in list order

    def source_of(index: int) -> str:
        return compress[index].source or previous[index]

    explicit = {index: t for index, t in enumerate(compress) if t.source is not None}
    for index, technique in explicit.items():  # names first: following a loop below needs them all known
        where, keys = f"{branch.label}[{index}] ({technique.technique})", (*branch.keys, index, "from")
        if index not in ids:
            raise UserError(f"{where}: remove from: post-training quantization converts the final model of compress", keys)
        if technique.source != "train" and technique.source not in position:
            names = ["train", *ids.values()]
            close = difflib.get_close_matches(technique.source, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"name train or an entry: {', '.join(names)}"
            raise UserError(f"{where}: from '{technique.source}' is not an artifact of this workflow; {hint}", keys)
    for index, technique in explicit.items():
        where, keys = f"{branch.label}[{index}] ({technique.technique})", (*branch.keys, index, "from")
        if technique.source != "train" and position[technique.source] >= index:
            chain, current = [ids[index]], index
            while (source := source_of(current)) != "train" and source not in chain:
                chain.append(source)
                current = position[source]
            if source == ids[index]:
                loop = ", which starts from ".join([*chain, source])
                raise UserError(f"{where}: from makes a cycle: {loop}; every model must lead back to train", keys)
            raise UserError(
                f"{where}: from '{technique.source}' runs after this entry; list the techniques in the order they run", keys
            )

    def task_id(name: str) -> str:
        return name if name == "train" else branch.name(name)

    return {index: (task_id(name), task_id(source_of(index))) for index, name in ids.items()}


def with_post_training_target(workflow: Workflow, branch: Branch, index: int, targets: list[TargetSpec]) -> list[TargetSpec]:
    """Post-training quantization (quantize mode dynamic, int8, fp16) is the TFLite conversion of the final Keras
    model, not a Keras step: the entry adds that target, its other parameters become the target's options."""
    options = dict(branch.compress[index].params)
    mode = options.pop("mode")
    target = POST_TRAINING_TARGETS[mode]
    later = [t.technique for t in branch.compress[index + 1 :]]
    where, keys = f"{branch.label}[{index}]", (*branch.keys, index)
    if later:
        raise UserError(f"{where}: quantize mode {mode} is the {target} conversion of the final model; move it after {', '.join(later)}", keys)
    if any(t.format == target for t in targets):
        if options:
            raise UserError(f"{where}: {target} is also listed in targets; set its options ({', '.join(options)}) there", keys)
        return targets
    step_config("convert", workflow, {"format": target, **options}, f"{where} (quantize mode {mode})", keys)
    return [*targets, TargetSpec(format=target, options=options)]


def placement(task: Task) -> Placement:
    """Where a plan task runs on the cluster: the image carrying what its step needs plus what its target format
    needs (a convert or validate of that format), with a GPU when either asks for one."""
    step = STEPS[task.step]
    target = FORMATS[task.target] if task.target else None
    extras = (*step.extras, *(target.extras if target else ()))
    return placement_for(extras, step.gpu or bool(target and target.gpu))


@dataclass(eq=False)  # hashed by identity: a key while the adapters build
class FanOut:
    """Conversion targets that run in one image: the orchestrators run them as one fan-out (a KFP ParallelFor, an
    Airflow mapped task group) of a convert and a validate task per target, since a fan-out carries one image."""

    placement: Placement
    pairs: list[tuple[Task, Task]]  # (convert, the validation of its output) per target
    rung: str | None = None  # a search rung's conversions fan out on their own: the rung may be skipped

    def named(self, name: str) -> str:
        return rung_artifact(self.rung, name) if self.rung else name

    @property
    def names(self) -> tuple[str, str]:
        """The fan-out's convert and validate task names, alike in KFP and Airflow: convert_<image>, ..."""
        convert = self.named(f"convert_{self.placement.label}")
        return convert, f"validate_{convert}"

    @property
    def identifier(self) -> str:
        """Unique among the plan's fan-outs and a valid Python identifier (KFP names its collected outputs so)."""
        return f"{self.rung}_{self.placement.label}" if self.rung else self.placement.label

    @property
    def group(self) -> str:
        """The name of the fan-out itself (the KFP ParallelFor, the Airflow task group)."""
        return self.named(f"targets_{self.placement.label}")


def fan_outs(plan: list[Task]) -> list[FanOut]:
    """The plan's conversion targets grouped by search rung and where they run, in plan order."""
    groups: dict[tuple[str | None, Placement], FanOut] = {}
    for convert in (t for t in plan if t.group == "convert"):
        validation = next(t for t in plan if t.step == "validate" and t.inputs.get("model") == convert.id)
        where = placement(convert)
        groups.setdefault((convert.rung, where), FanOut(where, [], convert.rung)).pairs.append((convert, validation))
    return list(groups.values())


def check_acyclic(tasks: list[Task]) -> None:
    """Every input must come from a task listed earlier: the plan's order is a valid execution order."""
    seen: set[str] = set()
    for task in tasks:
        for source in task.sources():
            if source not in seen:
                raise UserError(f"task {task.id} reads {source}, which does not run before it")
        if task.id in seen:
            raise UserError(f"two tasks are named {task.id}; name each step once")
        seen.add(task.id)
