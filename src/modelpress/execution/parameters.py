"""Run parameters: the knobs a user sets per run in an orchestrator's UI (the Kubeflow pipeline's parameters, the
Airflow DAG's Params), one list for both. Each overrides a config field (a dotted path) in every task whose config
has it; its default is the spec's value and its description the pydantic field's."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from modelpress.execution.plan import Task
from modelpress.steps.catalog import StepSpec


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    path: str  # the config field it sets (dotted), in every task whose config has it


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("data_uri", str, "data.path"),
    Parameter("epochs", int, "train.epochs"),
    Parameter("batch_size", int, "train.batch_size"),
    Parameter("sparsity", float, "sparsity"),
    Parameter("clusters", int, "clusters"),
    Parameter("min_accuracy", float, "gates.min_accuracy"),
    Parameter("max_drop", float, "gates.max_drop"),
    Parameter("push_uri", str, "push.uri"),
)


@dataclass(frozen=True)
class RunParameter:
    """A parameter of one workflow's runs: the spec's value as its default, the config field's description."""

    parameter: Parameter
    default: Any
    description: str

    @property
    def name(self) -> str:
        return self.parameter.name


MISSING = object()


def field_at(config: Any, path: str) -> tuple[Any, str]:
    """The value at a dotted path of a config instance and its field's description; MISSING when there is no such field."""
    node, description = config, ""
    for key in path.split("."):
        fields = getattr(type(node), "model_fields", {})
        if node is None or key not in fields:
            return MISSING, ""
        node, description = getattr(node, key), fields[key].description or ""
    return node, description


def run_parameters(plan: list[Task]) -> list[RunParameter]:
    """The parameters for the fields the spec sets (unset gates stay unset), in PARAMETERS order."""
    found = []
    for parameter in PARAMETERS:
        for task in plan:
            value, description = field_at(task.config, parameter.path)
            if value is not MISSING and value is not None:
                found.append(RunParameter(parameter, value, description))
                break
    return found


def model_has_path(model: type, path: str) -> bool:
    """True when a pydantic model class (or any member of a union) has the dotted field path."""
    head, _, rest = path.partition(".")
    fields = getattr(model, "model_fields", None)
    if fields is None or head not in fields:
        return False
    if not rest:
        return True
    annotation = fields[head].annotation
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    members = typing.get_args(annotation) or (annotation,)
    return any(model_has_path(member, rest) for member in members)


def step_parameters(step: StepSpec) -> list[Parameter]:
    """The parameters a step's config has a field for."""
    return [p for p in PARAMETERS if model_has_path(step.config, p.path)]
