"""`modelpress new`: commented workflow YAML files from templates (src/modelpress/cli/templates/)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from modelpress.common.errors import UserError
from modelpress.common.names import NAME_PATTERN
from modelpress.contract.workflow import parse_workflow

TEMPLATE_DIR = Path(__file__).parent / "templates"
# Template name -> (what it is for, file in TEMPLATE_DIR).
TEMPLATES = {
    "image-classifier": ("a CNN on images; starts on the bundled digits, weekly retraining", "image-classifier.yaml"),
    "tabular-mlp": ("a dense network on a CSV table in S3, retrained when the table changes", "tabular-mlp.yaml"),
    "byo-model": ("your own Keras builder function, trained and gated by ModelPress", "byo-model.yaml"),
}


def render(name: str, template: str) -> str:
    """The template's text for workflow `name`; validated, so what is written always passes `modelpress check`."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"workflow name '{name}' is not valid; use 1-63 lower-case letters, digits, '-' or '_'")
    if template not in TEMPLATES:
        close = difflib.get_close_matches(template, TEMPLATES, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(TEMPLATES)}"
        raise UserError(f"unknown template '{template}'; {hint}")
    text = (TEMPLATE_DIR / TEMPLATES[template][1]).read_text().replace("__NAME__", name)
    import yaml

    parse_workflow(yaml.safe_load(text), source=f"template {template}", text=text)
    return text


def write_workflow(name: str, template: str, folder: Path, overwrite: bool = False) -> Path:
    text = render(name, template)
    path = folder / f"{name}.yaml"
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
