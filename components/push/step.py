"""push: publish the blessed artifacts of a run as one numbered release bundle in the registry.

Inputs: `validations`, the validate outputs of every artifact (each blessing names its artifact). Unblessed
artifacts are never uploaded: they are listed in the manifest with their reasons, and a push with nothing blessed
(or with `require_all_blessed` and anything unblessed) fails with those reasons. The bundle's files are uploaded
into <registry>/<model>/<version>/, `manifest.json` last; then the labels move. Output: a small record folder
(`release.json`, a copy of the manifest and the model card) for the run report and later steps.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from .._core import releases, storage
from .._core.artifacts import ArtifactMeta, open_artifact, sha256_file
from .._core.errors import UserError
from .._core.progress import log
from .._core.report import artifact_rows, markdown_table
from .config import PushConfig

RELEASE_FILE = "release.json"
VALIDATION_FILES = ("blessing.json", "golden.npz", "predictions.npy", "evaluation.json")
SERVABLE_FORMAT = "saved_model"


def read_blessings(validations: list[str]) -> list[dict]:
    blessings = []
    for uri in validations:
        marker = storage.join(uri, "blessing.json")
        if not storage.exists(marker):
            raise UserError(f"{uri} is not a validate output (no blessing.json); pass the folders the validate step wrote")
        blessings.append({**json.loads(storage.read_bytes(marker)), "validation_uri": uri})
    return blessings


def select_blessed(blessings: list[dict], require_all: bool) -> tuple[list[dict], list[dict]]:
    blessed = [b for b in blessings if b["blessed"]]
    rejected = [b for b in blessings if not b["blessed"]]
    why = "; ".join(f"{b['name']}: {', '.join(b['reasons'])}" for b in rejected)
    if not blessed:
        raise UserError(f"nothing to push: no artifact is blessed ({why}); fix the model or the gates and validate again")
    if require_all and rejected:
        raise UserError(f"push refused: not every artifact is blessed ({why}); fix them or unset push.require_all_blessed")
    return blessed, rejected


def collect_files(blessing: dict, folder: Path, meta: ArtifactMeta, validation: Path) -> list[tuple[str, Path]]:
    """(path in the bundle, local file) for one artifact and its validation record."""
    name = blessing["name"]
    files = [(f"{releases.ARTIFACTS_DIR}/{name}/{p.relative_to(folder).as_posix()}", p) for p in sorted(folder.rglob("*")) if p.is_file()]
    files += [(f"{releases.VALIDATION_DIR}/{name}/{f}", validation / f) for f in VALIDATION_FILES if (validation / f).is_file()]
    return files


def model_card(model: str, version: int, manifest: dict, blessings: list[dict]) -> str:
    rows = artifact_rows(blessings, {e["name"]: e["path"] for e in manifest["artifacts"]}, {})
    gates = manifest["artifacts"][0]["thresholds"] if manifest["artifacts"] else {}
    lineage = manifest["lineage"]
    lines = [
        f"# {model} version {version}",
        "",
        f"Published {manifest['created']} · digest `{manifest['digest'][:16]}` · serving artifact `{manifest['serving_artifact']}`",
        "",
        markdown_table(rows),
        "",
        "## Gates",
        "",
        ", ".join(f"{k} {v}" for k, v in gates.items()) or "none configured",
        "",
    ]
    for entry in manifest["artifacts"]:
        results = ", ".join(f"{g['gate']} {'passed' if g['passed'] else 'FAILED'} ({g['value']})" for g in entry["gates"])
        lines.append(f"- **{entry['name']}** ({entry['format']}): {results or 'no gate applied'}")
    if manifest["rejected"]:
        lines += ["", "## Not published", ""]
        lines += [f"- **{r['name']}**: {'; '.join(r['reasons'])}" for r in manifest["rejected"]]
    lines += [
        "",
        "## Lineage",
        "",
        f"- data hash: `{lineage['data_hash']}`",
        f"- calibration data hashes: {', '.join(f'`{h}`' for h in lineage['calibration_hashes']) or '-'}",
        f"- workflow spec hash: `{lineage['workflow_hash'] or '-'}`",
        f"- git commit: `{lineage['git_commit'] or 'unknown'}`",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in lineage['libraries'].items())}",
        "",
    ]
    return "\n".join(lines)


def build_manifest(model, digest, files, blessed, rejected, metas, config: PushConfig) -> dict:
    artifacts = []
    for blessing in blessed:
        meta = metas[blessing["name"]]
        artifacts.append(
            {
                "name": blessing["name"],
                "format": blessing["format"],
                "path": f"{releases.ARTIFACTS_DIR}/{blessing['name']}",
                "model_path": meta.model_path,
                "source_uri": blessing["artifact"],
                "step": meta.step,
                "parent": meta.parent,
                "config_hash": meta.config_hash,
                "metrics": blessing["metrics"],
                "thresholds": blessing["thresholds"],
                "gates": blessing["gates"],
            }
        )
    servable = [b["name"] for b in blessed if b["format"] == SERVABLE_FORMAT]
    data_hashes = sorted({m.data_hash for m in metas.values() if m.data_hash})
    return {
        "model": model,
        "digest": digest,
        "created": releases._now(),
        "serving_artifact": servable[-1] if servable else None,  # the last Keras model of the chain is the final one
        "artifacts": artifacts,
        "rejected": [{"name": r["name"], "format": r["format"], "reasons": r["reasons"]} for r in rejected],
        "files": files,
        "lineage": {
            "data_hash": data_hashes[0] if len(data_hashes) == 1 else data_hashes or None,
            "calibration_hashes": sorted({m.calibration_hash for m in metas.values() if m.calibration_hash}),
            "parents": {name: m.parent for name, m in metas.items()},
            "workflow_hash": config.workflow_hash,
            "libraries": releases.library_versions(),
            "git_commit": releases.git_commit(),
        },
    }


def run(config: PushConfig, inputs: dict[str, str | list[str]], output: str, overwrite: bool = False) -> dict:
    spec = config.push
    model = spec.model_name
    if model is None:
        raise UserError("push.model_name is not set; set it in the push section (a workflow defaults it to its name)")
    storage.check_output(output, overwrite)
    root = spec.uri or releases.default_registry_uri(output)
    storage.check_bucket(root)
    validations = inputs["validations"]
    blessed, rejected = select_blessed(read_blessings([validations] if isinstance(validations, str) else validations), spec.require_all_blessed)
    for entry in rejected:
        log(f"not pushing {entry['name']}: {'; '.join(entry['reasons'])}")
    with contextlib.ExitStack() as stack:
        bundle: list[tuple[str, Path]] = []
        metas: dict[str, ArtifactMeta] = {}
        for blessing in blessed:
            folder, meta = stack.enter_context(open_artifact(blessing["artifact"]))
            validation = stack.enter_context(storage.local_copy(blessing["validation_uri"]))
            metas[blessing["name"]] = meta
            bundle += collect_files(blessing, folder, meta, validation)
        files = {path: {"sha256": sha256_file(local), "size": local.stat().st_size} for path, local in bundle}
        digest = releases.bundle_digest({path: f["sha256"] for path, f in files.items()})
        version, reused = publish(root, model, digest, bundle, files, blessed, rejected, metas, config)
    for label in spec.labels:
        releases.set_label(root, model, label, version, digest)
    record = {
        "model": model, "version": version, "reused": reused, "digest": digest, "labels": spec.labels,
        "registry": root, "version_uri": releases.version_uri(root, model, version),
        "published": [b["name"] for b in blessed], "rejected": [r["name"] for r in rejected],
    }
    with storage.staged_output(output, overwrite=overwrite, marker=RELEASE_FILE) as folder:
        manifest = releases.read_manifest(root, model, version)
        card = storage.read_bytes(storage.join(record["version_uri"], releases.MODEL_CARD_FILE))
        (folder / releases.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        (folder / releases.MODEL_CARD_FILE).write_bytes(card)
        (folder / RELEASE_FILE).write_text(json.dumps(record, indent=2))
    verb = "already published as" if reused else "published"
    log(f"{model}: {verb} version {version} at {record['version_uri']} (labels: {', '.join(spec.labels) or 'none'})")
    return {"uri": output, **record}


def publish(root, model, digest, bundle, files, blessed, rejected, metas, config: PushConfig) -> tuple[int, bool]:
    """Upload the bundle as a new version (manifest last), or find the version that already holds this content."""
    spec = config.push
    existing = releases.find_by_digest(root, model, digest)
    if existing is not None and spec.version in (None, existing):
        log(f"{model}: these models are already version {existing} (digest {digest[:12]}); nothing uploaded")
        return existing, True
    versions = releases.list_versions(root, model)
    version = spec.version or (versions[-1] + 1 if versions else 1)
    if version in versions:
        other = releases.read_manifest(root, model, version)["digest"]
        raise UserError(
            f"version {version} of '{model}' already exists with different content (digest {other[:12]}, this push "
            f"{digest[:12]}); versions never change: unset push.version to publish the next one"
        )
    while not releases.claim_version(root, model, version, digest):
        if spec.version is not None:
            raise UserError(
                f"version {version} of '{model}' is being published by another push with different content; "
                "unset push.version to publish the next one"
            )
        version += 1  # another push took this number first
    target = releases.version_uri(root, model, version)
    transfer = releases.transfer_config(spec.part_size_mb, spec.max_concurrency)
    total = sum(f["size"] for f in files.values())
    log(f"{model}: uploading version {version} ({len(bundle)} files, {total / (1 << 20):.1f} MiB) to {target}")
    for path, local in bundle:
        releases.put_file(local, storage.join(target, path), transfer, spec.retries)
    manifest = build_manifest(model, digest, files, blessed, rejected, metas, config)
    manifest["version"] = version
    with tempfile.TemporaryDirectory(prefix="modelpress-push-") as tmp:
        card = Path(tmp) / releases.MODEL_CARD_FILE
        card.write_text(model_card(model, version, manifest, blessed))
        releases.put_file(card, storage.join(target, releases.MODEL_CARD_FILE), transfer, spec.retries)
        manifest_file = Path(tmp) / releases.MANIFEST_FILE
        manifest_file.write_text(json.dumps(manifest, indent=2))
        releases.put_file(manifest_file, storage.join(target, releases.MANIFEST_FILE), transfer, spec.retries)  # completes it
    return version, False
