"""push: publish the blessed artifacts of a run as one numbered release bundle in the registry.

Inputs: `validations`, the validate outputs of every artifact (each blessing names its artifact and the digest of
the content it approved). Unblessed artifacts are never uploaded: they are listed in the manifest with their
reasons, and a push with nothing blessed (or with `require_all_blessed` and anything unblessed) fails with those
reasons. A blessed artifact whose content no longer matches its blessing is refused before anything is written.
The bundle's files are uploaded into <registry>/<model>/<version>/, `manifest.json` last (locally the version is
assembled beside it and renamed into place whole); then the labels move forward. Output: a small record folder
(`release.json`, a copy of the manifest and the model card) for the run report and later steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.io import releases, storage
from modelpress.io.artifacts import (
    BLESSING_FILE,
    ArtifactMeta,
    Blessing,
    check_blessed_content,
    open_artifact,
    read_blessing,
    sha256_file,
)
from modelpress.io.report import artifact_rows, markdown_table, measure
from modelpress.steps.push.config import PushConfig

RELEASE_FILE = "release.json"
VALIDATION_FILES = (BLESSING_FILE, "golden.npz", "predictions.npy", "evaluation.json")
SERVABLE_FORMAT = "saved_model"
SAME_BUNDLE_WAIT_S = 600.0  # how long a push waits for another run publishing the very same bundle


@dataclass
class Validation:
    """One validate output: where it is, its blessing, and the sha256 of blessing.json as read."""

    uri: str
    blessing: Blessing
    blessing_sha256: str

    @property
    def name(self) -> str:
        return self.blessing.name

    def row(self) -> dict:
        return {**self.blessing.model_dump(), "validation_uri": self.uri}


def read_blessings(validations: list[str]) -> list[Validation]:
    read = [Validation(uri, *read_blessing(uri)) for uri in validations]
    names = [v.name for v in read]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"two validations are named '{twice[0]}'; each artifact of a release needs its own name")
    return read


def select_blessed(validations: list[Validation], require_all: bool) -> tuple[list[Validation], list[Validation]]:
    blessed = [v for v in validations if v.blessing.blessed]
    rejected = [v for v in validations if not v.blessing.blessed]
    why = "; ".join(f"{v.name}: {', '.join(v.blessing.reasons)}" for v in rejected)
    if not blessed:
        raise UserError(f"nothing to push: no artifact is blessed ({why}); fix the model or the gates and validate again")
    if require_all and rejected:
        raise UserError(f"push refused: not every artifact is blessed ({why}); fix them or unset push.require_all_blessed")
    return blessed, rejected


def collect_files(name: str, folder: Path, validation: Path) -> list[tuple[str, Path]]:
    """(path in the bundle, local file) for one artifact and its validation record."""
    files = [(f"{releases.ARTIFACTS_DIR}/{name}/{p.relative_to(folder).as_posix()}", p) for p in sorted(folder.rglob("*")) if p.is_file()]
    files += [(f"{releases.VALIDATION_DIR}/{name}/{f}", validation / f) for f in VALIDATION_FILES if (validation / f).is_file()]
    return files


def default_run_id(output: str) -> str:
    """A run's push output is its own (<run>/release/push), so its absolute URI identifies the run across retries."""
    return hashlib.sha256(storage.absolute_uri(output).encode()).hexdigest()[:16]


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
        ", ".join(f"{k} {measure(k, v)}" for k, v in gates.items()) or "none configured",
        "",
    ]
    for entry in manifest["artifacts"]:
        results = ", ".join(f"{g['gate']} {'passed' if g['passed'] else 'FAILED'} ({measure(g['gate'], g['value'])})" for g in entry["gates"])
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


def build_manifest(model, digest, files, blessed: list[Validation], rejected: list[Validation], metas, config: PushConfig) -> dict:
    artifacts = []
    for validation in blessed:
        blessing, meta = validation.blessing, metas[validation.name]
        artifacts.append(
            {
                "name": blessing.name,
                "format": blessing.format,
                "path": f"{releases.ARTIFACTS_DIR}/{blessing.name}",
                "model_path": meta.model_path,
                "source_uri": blessing.artifact,
                "artifact_digest": blessing.artifact_digest,
                "blessing_sha256": validation.blessing_sha256,
                "step": meta.step,
                "parent": meta.parent,
                "config_hash": meta.config_hash,
                "metrics": blessing.metrics,
                "thresholds": blessing.thresholds,
                "gates": blessing.gates,
            }
        )
    servable = [v.name for v in blessed if v.blessing.format == SERVABLE_FORMAT]
    data_hashes = sorted({m.data_hash for m in metas.values() if m.data_hash})
    return {
        "model": model,
        "digest": digest,
        "created": releases._now(),
        "serving_artifact": servable[-1] if servable else None,  # the last Keras model of the chain is the final one
        "artifacts": artifacts,
        "rejected": [{"name": r.name, "format": r.blessing.format, "reasons": r.blessing.reasons} for r in rejected],
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
    run_id = config.run_id or default_run_id(output)
    validations = inputs["validations"]
    blessed, rejected = select_blessed(read_blessings([validations] if isinstance(validations, str) else validations), spec.require_all_blessed)
    for entry in rejected:
        log(f"not pushing {entry.name}: {'; '.join(entry.blessing.reasons)}")
    with contextlib.ExitStack() as stack:
        bundle: list[tuple[str, Path]] = []
        metas: dict[str, ArtifactMeta] = {}
        for validation in blessed:
            uri = validation.blessing.artifact
            folder, meta = stack.enter_context(open_artifact(uri))
            check_blessed_content(validation.blessing, folder, meta, uri)
            local_validation = stack.enter_context(storage.local_copy(validation.uri))
            metas[validation.name] = meta
            bundle += collect_files(validation.name, folder, local_validation)
        files = {path: {"sha256": sha256_file(local), "size": local.stat().st_size} for path, local in bundle}
        digest = releases.bundle_digest({path: f["sha256"] for path, f in files.items()})
        version, reused = publish(root, model, digest, run_id, bundle, files, blessed, rejected, metas, config)
    moved = [label for label in spec.labels if releases.move_label(root, model, label, version, digest)]
    record = {
        "model": model, "version": version, "reused": reused, "digest": digest, "labels": spec.labels,
        "labels_moved": moved, "run_id": run_id, "registry": root, "version_uri": releases.version_uri(root, model, version),
        "published": [v.name for v in blessed], "rejected": [r.name for r in rejected],
    }
    with storage.staged_output(output, overwrite=overwrite, marker=RELEASE_FILE) as folder:
        manifest = releases.read_manifest(root, model, version)
        card = storage.read_bytes(storage.join(record["version_uri"], releases.MODEL_CARD_FILE))
        (folder / releases.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        (folder / releases.MODEL_CARD_FILE).write_bytes(card)
        (folder / RELEASE_FILE).write_text(json.dumps(record, indent=2))
    verb = "already published as" if reused else "published"
    log(f"{model}: {verb} version {version} at {record['version_uri']} (labels moved: {', '.join(moved) or 'none'})")
    return {"uri": output, **record}


def already_published(root: str, model: str, digest: str, pinned: int | None) -> int | None:
    """The version already holding these models, unless the push pins another number."""
    existing = releases.find_by_digest(root, model, digest)
    if existing is None or pinned not in (None, existing):
        return None
    log(f"{model}: these models are already version {existing} (digest {digest[:12]}); nothing uploaded")
    return existing


def choose_version(root: str, model: str, digest: str, run_id: str, pinned: int | None) -> tuple[int, bool]:
    """(version, content already complete there), chosen while holding the bundle claim, so no other run is choosing
    a number for this bundle: the version holding it, the number this run or an earlier holder of the bundle claim
    took for it, the pinned number, or the next free number, claimed before anything is uploaded."""
    existing = already_published(root, model, digest, pinned)
    if existing is not None:
        return existing, True
    versions = releases.list_versions(root, model)
    if pinned is not None and pinned in versions:
        other = releases.read_manifest(root, model, pinned)["digest"]
        raise UserError(
            f"version {pinned} of '{model}' already exists with different content (digest {other[:12]}, this push "
            f"{digest[:12]}); versions never change: unset push.version to publish the next one"
        )
    taken_up = releases.open_claim(root, model, digest, run_id) if pinned is None else None
    version = taken_up or pinned or max([*versions, *releases.claimed_versions(root, model), 0]) + 1
    while releases.claim_version(root, model, version, digest, run_id)["run_id"] != run_id:
        if pinned is not None:
            raise UserError(
                f"version {version} of '{model}' is being published by another push with different content; "
                "unset push.version to publish the next one"
            )
        version += 1  # another push took this number first
    return version, False


def publish(root, model, digest, run_id, bundle, files, blessed, rejected, metas, config: PushConfig) -> tuple[int, bool]:
    """Upload the bundle as a new version (manifest last), or find the version that already holds this content."""
    spec = config.push
    existing = already_published(root, model, digest, spec.version)
    if existing is not None:  # checked before taking the bundle claim too: re-pushing known models writes nothing
        return existing, True
    with releases.bundle_claim(root, model, digest, run_id, SAME_BUNDLE_WAIT_S):
        version, complete = choose_version(root, model, digest, run_id, spec.version)
        if complete:
            return version, True
        target = releases.version_uri(root, model, version)
        total = sum(f["size"] for f in files.values())
        log(f"{model}: uploading version {version} ({len(bundle)} files, {total / (1 << 20):.1f} MiB) to {target}")
        manifest = build_manifest(model, digest, files, blessed, rejected, metas, config)
        manifest["version"] = version
        with tempfile.TemporaryDirectory(prefix="modelpress-push-") as tmp:
            card = Path(tmp) / releases.MODEL_CARD_FILE
            card.write_text(model_card(model, version, manifest, [v.row() for v in blessed]))
            manifest_file = Path(tmp) / releases.MANIFEST_FILE
            manifest_file.write_text(json.dumps(manifest, indent=2))
            # the model card, then the manifest: the manifest completes a version
            complete_bundle = [*bundle, (releases.MODEL_CARD_FILE, card), (releases.MANIFEST_FILE, manifest_file)]
            if storage.is_s3(target):
                upload_version(target, complete_bundle, run_id, config)
            else:
                assemble_version(root, model, version, run_id, complete_bundle)
    return version, False


def upload_version(target: str, bundle: list[tuple[str, Path]], run_id: str, config: PushConfig) -> None:
    """S3: the version prefix is invisible until its manifest, so it is its own staging area, claimed by this run.
    Before uploading, clear what a killed attempt left there: incomplete multipart uploads and stray objects."""
    spec = config.push
    wanted = {storage.join(target, path) for path, _ in bundle}
    aborted = storage.abort_uploads(target)
    loc = storage.S3Location.parse(target)
    stale = [key for key in storage.list_keys(target) if f"s3://{loc.bucket}/{key}" not in wanted]  # same paths are overwritten
    storage.delete_keys(loc.bucket, stale)
    if aborted or stale:
        log(f"cleared what an interrupted push left in {target}: {aborted} incomplete upload(s), {len(stale)} stray object(s)")
    transfer = storage.transfer_config(spec.part_size_mb, spec.max_concurrency)
    for path, local in bundle:
        storage.put_file(local, storage.join(target, path), transfer, spec.retries)


def assemble_version(root: str, model: str, version: int, run_id: str, bundle: list[tuple[str, Path]]) -> None:
    """Local: build the version in <model>/.incoming/ and rename it into place whole, so a version folder never holds
    a temporary or partial file."""
    incoming = Path(releases.model_uri(root, model)) / releases.INCOMING_DIR / f"{version}-{run_id}"
    shutil.rmtree(incoming, ignore_errors=True)  # a killed attempt of this run
    for path, local in bundle:
        (incoming / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, incoming / path)
    final = Path(releases.version_uri(root, model, version))
    if final.is_dir() and not (final / releases.MANIFEST_FILE).is_file():
        shutil.rmtree(final)  # an incomplete folder of an older ModelPress: the claim is ours
    os.rename(incoming, final)
