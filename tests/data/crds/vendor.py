"""Vendor a CRD's validation schema as test data: `python vendor.py CRD.yaml OUT.json`, or for a CRD whose
openAPIV3Schema validates nothing (Katib's: `x-kubernetes-preserve-unknown-fields` at the root),
`python vendor.py --swagger SWAGGER.json DEFINITION GROUP OUT.json` from the project's generated OpenAPI of its Go types.

Keeps the openAPIV3Schema of the CRD's storage version (or the definition with every definition it refers to) with
every `description` dropped (they are most of the file and validate nothing); the schema itself is unchanged.
Sources are listed in README.md beside this file.
"""

from __future__ import annotations

import json
import sys

import yaml


def without_descriptions(node):
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def storage_schema(crd: dict) -> dict:
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return {
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": version["name"],
        "schema": without_descriptions(version["schema"]["openAPIV3Schema"]),
    }


# Kubernetes' own types a swagger refers to but does not define: the API server checks them, not the CRD.
KUBERNETES_TYPES = {
    "v1.Time": {"type": "string"},
    **{name: {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
       for name in ("v1.ObjectMeta", "v1.ListMeta", "v1.Container", "v1.HTTPGetAction", "v1.unstructured.Unstructured")},
}


def swagger_schema(swagger: dict, definition: str, group: str) -> dict:
    """`definition` (e.g. v1beta1.Experiment) of a swagger 2.0 file as a JSON schema whose $refs resolve in itself."""
    version, kind = definition.split(".")
    definitions = {**KUBERNETES_TYPES, **swagger["definitions"]}
    schema = {**definitions[definition], "definitions": definitions}
    return {"group": group, "kind": kind, "version": version, "schema": without_descriptions(schema)}


if __name__ == "__main__":
    if sys.argv[1] == "--swagger":
        source, definition, group, target = sys.argv[2:]
        with open(source) as stream:
            vendored = swagger_schema(json.load(stream), definition, group)
    else:
        source, target = sys.argv[1:]
        with open(source) as stream:
            crd = next(d for d in yaml.safe_load_all(stream) if d and d.get("kind") == "CustomResourceDefinition")
        vendored = storage_schema(crd)
    with open(target, "w") as stream:
        json.dump(vendored, stream, separators=(",", ":"), sort_keys=True)
