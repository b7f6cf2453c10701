"""The README's workflow and step reference, generated from the spec models and the registry so it cannot drift.

`python -m modelpress.cli.docs README.md` rewrites the part between the reference markers; a test fails when the
README is stale.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

START, END = "<!-- reference:start -->", "<!-- reference:end -->"


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None or value is PydanticUndefined:
        return "-"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "`[" + ", ".join(str(next(iter(v.model_dump().values()))) for v in value) + "]`"
    return f"`{value}`" if value not in ({}, []) else "-"


def model_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def reference() -> str:
    from modelpress.contract import compression, data_sources, kubernetes, publishing, schema, training, workflow
    from modelpress.contract.formats import FORMATS
    from modelpress.contract.images import GPU_TAG_SUFFIX, GPU_VARIANT_SETS
    from modelpress.execution.plan import Task, placement
    from modelpress.steps.catalog import STEPS

    sections = [
        ("Top level", workflow.Workflow, ()),
        ("`model`", training.ModelSpec, ()),
        ("`train`", training.TrainSpec, ()),
        ("`tune`", training.TuneSpec, ()),
        ("`tune.space` ranges (`name: {min, max}`; a list instead gives the choices)", training.SearchRange, ()),
        ("`gates`", compression.Gates, ()),
        ("`evaluation`", compression.EvaluationSpec, ()),
        ("`storage`", schema.StorageSettings, ()),
        ("`push`", publishing.PushSpec, ()),
        ("`serving`", publishing.ServingSpec, ()),
        ("`kubernetes`", kubernetes.KubernetesSpec, ()),
        ("`targets[]` (a format name, or a mapping)", compression.TargetSpec, ()),
    ]
    sources = [
        data_sources.DigitsData, data_sources.OptdigitsData, data_sources.GeneratedData, data_sources.CsvData, data_sources.NpzData, data_sources.TfrecordData,
        data_sources.ImageFolderData,
    ]
    out = []
    for title, model, skip in sections:
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ and model.__module__.startswith("modelpress.contract.") else ""
        out += [f"#### {title}", "", *([doc, ""] if doc and not doc.startswith("!!!") else []), model_table(model, skip), ""]
    out += ["#### `data` (one of these sources, chosen by `source`)", ""]
    for model in sources:
        source = typing.get_args(model.model_fields["source"].annotation)[0]
        out += [f"`source: {source}` - {(model.__doc__ or '').strip()}", "", model_table(model, ("source",)), ""]
    out += ["#### `data.split`", "", model_table(data_sources.SplitSpec), ""]
    source = compression.TechniqueSpec.model_fields["source"].description
    out += [
        "#### `compress[]`",
        "",
        "Each entry is `technique:` plus that step's own parameters (the step table's config keys other than the "
        f"workflow sections); `from:` is {source}.",
        "",
    ]
    out += ["### Steps", "", "| step | what it does | inputs | output | image | GPU | config keys |", "|---|---|---|---|---|---|---|"]
    for name, step in STEPS.items():
        inputs = ", ".join([*step.inputs, *(f"[{o}]" for o in step.optional_inputs)]) or "-"
        keys = ", ".join(f"`{k}`" for k in step.config.model_fields if k != "storage")
        out.append(f"| `{name}` | {step.description} | {inputs} | {step.output} | {step.placement.dependency_set} | {'yes' if step.gpu else 'no'} | {keys} |")
    variants = ", ".join(f"`{name}`" for name in GPU_VARIANT_SETS)
    notes = [f"On the cluster a GPU step runs in the CUDA build of its image where there is one ({variants}: tag `<version>{GPU_TAG_SUFFIX}`)."]
    by_place = {}
    for name in FORMATS:
        by_place.setdefault(placement(Task(name, "convert", None, target=name)), []).append(f"`{name}`")
    for where, formats in by_place.items():
        gpu = ", with a GPU" if where.gpu else ""
        notes.append(f"The convert and validate tasks of {', '.join(formats)} run in the {where.dependency_set} image{gpu}.")
    out += ["", " ".join(notes)]
    return "\n".join(out).rstrip() + "\n"


def render(readme: str) -> str:
    before, _, rest = readme.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{reference()}{END}{after}"


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text()))
    print(f"updated the reference in {path}")
