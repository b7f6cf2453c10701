"""Running one task of a plan: the logic `modelpress step`, the local runner, the Kubeflow component and the Airflow
operators share, so each of them stays a thin wrapper.

- config: the step's JSON (or model), with overrides at dotted paths (the UI's run parameters) applied first;
- skip markers: a task whose single input was skipped skips too; a list input (push's validations) leaves out the
  skipped ones; a skipped task writes SKIP_MARKER into its output so the tasks reading it skip alike, whatever
  runs them (another pod, another process);
- `after`: any task may read one more task's output as input `after`, only to run after it and skip when it
  skipped (a search rung's first tasks read the search task deciding whether the rung runs); the step never sees it;
- publishing: a step that reads validations (push, deploy) runs only when one of them blessed its model;
- the result: what the step returned (URIs, metrics, blessing), written where the orchestrator reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from modelpress.common.errors import UserError
from modelpress.io import storage
from modelpress.io.artifacts import BLESSING_FILE, read_blessing
from modelpress.steps.catalog import StepSpec, get_step

SKIP_MARKER = "skipped.json"
AFTER_INPUT = "after"  # an input every step takes: the task it waits for, whose skip it follows
# Why a publishing task (push, deploy) skips when none of the validations it reads blessed its model.
NOTHING_TO_PUBLISH = "no validation it reads blessed its model; nothing to publish"

Inputs = dict[str, str | list[str]]


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted path's value (None leaves the spec's). A path the step has no field for is then refused by
    its config's validation, naming the key; the adapters pass a run parameter only to the tasks that have it."""
    for path, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {path}: '{key}' is not a section of this step's config")
        node[leaf] = value
    return values


def parse_config(step_name: str, config: BaseModel | dict | str, overrides: dict[str, Any] | None = None) -> BaseModel:
    """A step's config from its model, a dict or JSON text (`@path` reads a file), overrides applied."""
    from modelpress.contract.yaml_input import describe_validation_error

    if isinstance(config, BaseModel) and not overrides:
        return config
    if isinstance(config, BaseModel):
        config = config.model_dump(exclude_unset=True)
    if isinstance(config, str):
        text = config
        if text.startswith("@"):
            path = Path(text[1:])
            if not path.is_file():
                raise UserError(f"--config file {path} not found")
            text = path.read_text()
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            if os.path.isfile(text):  # JSON text and file names overlap (a file named 1, or null): files need the @
                raise UserError(f"--config {text} is a file name, not JSON; write --config @{text} to read the file") from None
            raise UserError(f"--config is not valid JSON ({exc.msg} at character {exc.pos}); quote it or use @file") from None
    data = apply_overrides(config, overrides or {})
    try:
        return get_step(step_name).config.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, data, f"step {step_name} --config", None)) from None


def check_inputs(step_name: str, step: StepSpec, inputs: Inputs) -> None:
    known = set(step.inputs) | set(step.optional_inputs) | {AFTER_INPUT}
    for name in inputs:
        if name not in known:
            raise UserError(f"step {step_name} has no input '{name}'; its inputs: {', '.join(sorted(known)) or 'none'}")
    for name in step.inputs:
        if name not in inputs:
            raise UserError(f"step {step_name} needs --input {name}=URI")


def was_skipped(uri: str) -> bool:
    return storage.exists(storage.join(uri, SKIP_MARKER))


def without_skipped(step: StepSpec, inputs: Inputs) -> tuple[Inputs, str | None]:
    """The inputs that ran, and the reason this task skips (a single input was skipped), if it does."""
    kept: Inputs = {}
    for name, uri in inputs.items():
        if isinstance(uri, list):
            kept[name] = [u for u in uri if not was_skipped(u)]
        elif was_skipped(uri):
            return inputs, "the task it runs after was skipped" if name == AFTER_INPUT else f"its input '{name}' was skipped"
        else:
            kept[name] = uri
    return kept, None


def nothing_blessed(step: StepSpec, inputs: Inputs) -> str | None:
    """Why a publishing step skips: its validations (inputs holding a blessing) all refused their models."""
    if step.output == "validation":
        return None
    blessings = [
        read_blessing(uri)[0]
        for value in inputs.values()
        for uri in (value if isinstance(value, list) else [value])
        if storage.exists(storage.join(uri, BLESSING_FILE))
    ]
    if not blessings or any(b.blessed for b in blessings):
        return None
    reasons = "; ".join(f"{b.name}: {', '.join(b.reasons)}" for b in blessings)
    return f"{NOTHING_TO_PUBLISH} ({reasons})"


def skip(output: str, reason: str, overwrite: bool, artifact: str | None = None) -> dict[str, Any]:
    """Mark `output` skipped; the marker names the artifact (a validation's), which the run report lists."""
    result = {"skipped": True, "reason": reason}
    if overwrite and storage.exists(output):  # a retry that now skips leaves no output of the earlier attempt
        storage.remove(output)
    marker = result if artifact is None else {**result, "artifact": artifact}
    storage.write_bytes(storage.join(output, SKIP_MARKER), json.dumps(marker).encode())
    return result


def run_task(
    step_name: str,
    config: BaseModel | dict | str,
    inputs: Inputs,
    output: str,
    *,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    result_file: str | None = None,
) -> dict[str, Any]:
    """Run one task; returns its result (also written to `result_file`)."""
    step = get_step(step_name)
    check_inputs(step_name, step, inputs)
    parsed = parse_config(step_name, config, overrides)
    storage.configure(getattr(parsed, "storage", None))
    ran, skipped_because = without_skipped(step, inputs)
    if skipped_because is None:
        skipped_because = nothing_blessed(step, ran)
    if skipped_because is not None:
        result = skip(output, skipped_because, overwrite, getattr(parsed, "name", None))
    else:
        ran = {name: uri for name, uri in ran.items() if name != AFTER_INPUT}
        result = step.load()(parsed, ran, output, overwrite=overwrite)
        if result.get("skipped"):  # the step's own skip (a target whose hardware is absent)
            result = skip(output, result["reason"], overwrite, getattr(parsed, "name", None))
    if result_file:
        Path(result_file).parent.mkdir(parents=True, exist_ok=True)
        Path(result_file).write_text(json.dumps(result, indent=2, default=str))
    return result
