"""Vendor a CRD's validation schema as test data: `python vendor.py CRD.yaml OUT.json`.

Keeps the openAPIV3Schema of the CRD's storage version with every `description` dropped (they are most of the
file and validate nothing); the schema itself is unchanged. Sources are listed in README.md beside this file.
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


if __name__ == "__main__":
    source, target = sys.argv[1:]
    with open(source) as stream:
        crd = next(d for d in yaml.safe_load_all(stream) if d and d.get("kind") == "CustomResourceDefinition")
    with open(target, "w") as stream:
        json.dump(storage_schema(crd), stream, separators=(",", ":"), sort_keys=True)
