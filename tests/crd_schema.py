"""Offline validation of custom resources against the CRD schemas vendored in tests/data/crds/.

Strict like `kubernetes_validate.validate(..., strict=True)`: where a schema lists an object's properties and neither
allows others nor preserves unknown fields, an unknown field is an error (the API server would prune it silently,
so a typo would go unnoticed on a cluster). `int-or-string` fields take either. CEL rules (x-kubernetes-validations)
are not evaluated; tests check the ones that matter to them explicitly.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema

CRDS = Path(__file__).parent / "data" / "crds"


def strict(schema: dict) -> dict:
    if not isinstance(schema, dict):
        return schema
    schema = {k: [strict(i) for i in v] if isinstance(v, list) else strict(v) if isinstance(v, dict) and k != "properties" else v
              for k, v in schema.items()}
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return schema


@functools.cache
def validator(file: str) -> tuple[str, str, jsonschema.protocols.Validator]:
    vendored = json.loads((CRDS / file).read_text())
    schema = strict(vendored["schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server itself
    return f"{vendored['group']}/{vendored['version']}", vendored["kind"], jsonschema.Draft7Validator(schema)


def validate(resource: dict, file: str) -> None:
    """Raise jsonschema.ValidationError naming the path of the first error; the apiVersion and kind must match."""
    api_version, kind, checker = validator(file)
    if (resource.get("apiVersion"), resource.get("kind")) != (api_version, kind):
        raise jsonschema.ValidationError(f"expected {api_version} {kind}, got {resource.get('apiVersion')} {resource.get('kind')}")
    error = jsonschema.exceptions.best_match(checker.iter_errors(resource))
    if error is not None:
        raise error
