"""The step registry: plain data that the CLI, the local runner, the Kubeflow and Airflow adapters and the docs read.

A step is `run(config, inputs, output, overwrite=False) -> result`: `config` is the step's pydantic model, `inputs`
maps input names to URIs, `output` is the URI the step writes (a folder, staged and moved into place last), and the
result is a JSON-able dict (what `--result FILE` and `/airflow/xcom/return.json` carry).
`run` is named as "module:function" and imported only when the step runs, so reading the registry imports no
TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from modelpress.common.errors import UserError
from modelpress.contract.images import Placement, placement_for
from modelpress.contract.kubernetes import KubernetesSpec, StepResources
from modelpress.steps.cluster.config import ClusterConfig
from modelpress.steps.convert.config import ConvertConfig
from modelpress.steps.deploy.config import DeployConfig
from modelpress.steps.distill.config import DistillConfig
from modelpress.steps.prune.config import PruneConfig
from modelpress.steps.push.config import PushConfig
from modelpress.steps.quantize.config import QuantizeConfig
from modelpress.steps.search.config import SearchConfig
from modelpress.steps.select.config import SelectConfig
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.tune.config import TuneConfig
from modelpress.steps.validate.config import ValidateConfig

# What a step's pod asks for on a cluster unless the workflow's kubernetes.resources says otherwise. Limits are set
# too: without one, the namespace's LimitRange (infra/) would give a default limit below these requests.
TRAINING_RESOURCES = StepResources(cpu="4", memory="8Gi", cpu_limit="8", memory_limit="16Gi")
EVALUATION_RESOURCES = StepResources(cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi")
PUBLISHING_RESOURCES = StepResources(cpu="500m", memory="1Gi", cpu_limit="1", memory_limit="2Gi")


@dataclass(frozen=True)
class StepSpec:
    run: str  # "module:function"
    config: type[BaseModel]
    inputs: tuple[str, ...]  # input names, in order
    optional_inputs: tuple[str, ...] = ()
    list_inputs: tuple[str, ...] = ()  # inputs that take several URIs (a list; repeat --input NAME=URI)
    output: str = "model"  # what the output folder holds: "model" (an artifact) or "validation", "release", ...
    extras: tuple[str, ...] = ("tf",)  # pip extras the step needs (images.py picks the image carrying them)
    gpu: bool = False  # request a GPU on the cluster
    resources: StepResources = EVALUATION_RESOURCES  # CPU, memory and timeout_minutes of its pod (set timeout_minutes)
    # Its failures are mostly transient (S3, a model server): Kubeflow, which retries whatever failed, user errors
    # included, retries only these. Airflow retries every step but a user error (exit 2).
    retried_on_kubeflow: bool = False
    description: str = ""

    @property
    def placement(self) -> Placement:
        """Where the step runs when no target format adds needs (plan.placement has the task's)."""
        return placement_for(self.extras, self.gpu)

    def load(self) -> Callable[..., dict[str, Any]]:
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


STEPS: dict[str, StepSpec] = {
    "tune": StepSpec(
        run="modelpress.steps.tune.step:run",
        config=TuneConfig,
        inputs=(),
        output="hyperparameters",
        gpu=True,
        resources=TRAINING_RESOURCES.model_copy(update={"timeout_minutes": 1440}),
        description="search train's hyperparameters (random, Bayesian, Hyperband with keras-tuner); write best.json for train",
    ),
    "train": StepSpec(
        run="modelpress.steps.train.step:run",
        config=TrainConfig,
        inputs=(),
        optional_inputs=("hyperparameters",),
        output="model",
        gpu=True,
        resources=TRAINING_RESOURCES.model_copy(update={"timeout_minutes": 720}),
        description="build the model, train it on the workflow's data, save a Keras model and a SavedModel",
    ),
    "prune": StepSpec(
        run="modelpress.steps.prune.step:run",
        config=PruneConfig,
        inputs=("model",),
        output="model",
        gpu=True,
        resources=TRAINING_RESOURCES.model_copy(update={"timeout_minutes": 360}),
        description="prune a Keras model: magnitude (tfmot, N:M patterns), structured (fewer neurons/filters) or lottery rewind",
    ),
    "cluster": StepSpec(
        run="modelpress.steps.cluster.step:run",
        config=ClusterConfig,
        inputs=("model",),
        output="model",
        gpu=True,
        resources=TRAINING_RESOURCES.model_copy(update={"timeout_minutes": 360}),
        description="cluster a Keras model's kernels to k shared values (tfmot; keeps a pruned parent's zeros), fine-tune, strip",
    ),
    "quantize": StepSpec(
        run="modelpress.steps.quantize.step:run",
        config=QuantizeConfig,
        inputs=("model",),
        output="model",
        gpu=True,
        resources=TRAINING_RESOURCES.model_copy(update={"timeout_minutes": 360}),
        description="quantization-aware training (QAT, or PQAT/CQAT/PCQAT keeping sparsity and clusters); saved with its INT8 ranges",
    ),
    "distill": StepSpec(
        run="modelpress.steps.distill.step:run",
        config=DistillConfig,
        inputs=("model",),
        output="model",
        gpu=True,
        resources=TRAINING_RESOURCES.model_copy(update={"timeout_minutes": 720}),
        description="distil the model (teacher) into a smaller student on softened logits; also trains the student from scratch to measure the gain",
    ),
    "validate": StepSpec(
        run="modelpress.steps.validate.step:run",
        config=ValidateConfig,
        inputs=("model",),
        optional_inputs=("parent", "baseline"),
        output="validation",
        gpu=False,
        resources=EVALUATION_RESOURCES.model_copy(update={"timeout_minutes": 60}),
        description="evaluate an artifact on the test split, apply the gates, write blessing.json",
    ),
    "convert": StepSpec(
        run="modelpress.steps.convert.step:run",
        config=ConvertConfig,
        inputs=("model",),
        output="model",
        gpu=False,
        resources=EVALUATION_RESOURCES.model_copy(update={"timeout_minutes": 120}),
        description="convert a Keras artifact to one target (TFLite, OpenVINO, ONNX, TensorRT), checked against its parent",
    ),
    "search": StepSpec(
        run="modelpress.steps.search.step:run",
        config=SearchConfig,
        inputs=("validations",),
        list_inputs=("validations",),
        output="search",
        extras=("s3",),
        resources=PUBLISHING_RESOURCES.model_copy(update={"timeout_minutes": 10}),
        description="before a rung of the search ladder: skip it (and its training) when an earlier artifact already meets the target",
    ),
    "select": StepSpec(
        run="modelpress.steps.select.step:run",
        config=SelectConfig,
        inputs=("validations",),
        list_inputs=("validations",),
        output="validation",
        extras=("s3",),
        resources=PUBLISHING_RESOURCES.model_copy(update={"timeout_minutes": 10}),
        description="end of the search: the validation of the artifact to publish (meets the target from the cheapest rung), or the closest one unblessed",
    ),
    "push": StepSpec(
        run="modelpress.steps.push.step:run",
        config=PushConfig,
        inputs=("validations",),
        list_inputs=("validations",),
        output="release",
        extras=("s3",),
        gpu=False,
        resources=PUBLISHING_RESOURCES.model_copy(update={"timeout_minutes": 30}),
        retried_on_kubeflow=True,
        description="publish the blessed artifacts as a numbered release bundle (manifest, model card) in the registry",
    ),
    "deploy": StepSpec(
        run="modelpress.steps.deploy.step:run",
        config=DeployConfig,
        inputs=("validation",),
        optional_inputs=("model", "release"),  # model: default the artifact the validation names (a search's selection)
        output="deployment",
        extras=("s3", "serving"),
        gpu=False,
        resources=PUBLISHING_RESOURCES.model_copy(update={"timeout_minutes": 30}),
        retried_on_kubeflow=True,
        description="copy the blessed SavedModel into TF Serving's base path; reload, smoke-test, move the stable label",
    ),
}


def step_resources(name: str, settings: KubernetesSpec) -> StepResources:
    """What step `name`'s pod asks for: the workflow's kubernetes.resources entry over the step's defaults."""
    keys = ("kubernetes", "resources", name)
    if name not in STEPS:
        raise UserError(f"kubernetes.resources.{name}: no step '{name}'; resources are keyed by step: {', '.join(STEPS)}", keys)
    chosen = settings.resources.get(name)
    if chosen is None:
        return STEPS[name].resources
    try:
        return chosen.over(STEPS[name].resources)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"kubernetes.resources.{name}: {problem} (the step's defaults: {STEPS[name].resources.model_dump(exclude_none=True)})", keys) from None


def get_step(name: str) -> StepSpec:
    if name not in STEPS:
        import difflib

        close = difflib.get_close_matches(name, STEPS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known steps: {', '.join(STEPS)}"
        raise UserError(f"unknown step '{name}'; {hint}")
    return STEPS[name]


def checked_step(caller: str, name: str, config: dict[str, Any] | None, kubernetes: dict[str, Any] | None):
    """A step used on its own in a team's pipeline or DAG: (its spec, the `kubernetes:` settings, its config), checked
    when the pipeline is defined. A mistake is one line naming `caller` (e.g. "modelpress.kfp.step('prune')") and key."""
    spec = get_step(name)
    try:
        return spec, KubernetesSpec.model_validate(kubernetes or {}), spec.config.model_validate(config or {})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise UserError(f"{caller}: {where}: {problem['msg'].removeprefix('Value error, ')}") from None
