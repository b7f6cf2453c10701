"""The model registry on a bucket (or a local folder): numbered release bundles, manifests and labels.

Layout under the registry URI:
    <model>/<version>/artifacts/<name>/...      every blessed artifact, verbatim (with its artifact.json)
    <model>/<version>/validation/<name>/...     its blessing, golden examples and test predictions
    <model>/<version>/MODEL_CARD.md             the comparison table, gates, lineage
    <model>/<version>/manifest.json             written last: a version without it does not exist
    <model>/labels/<label>.json                 {"version": N, "history": [...]}: changed by compare-and-swap
    <model>/claims/<version>                    {"digest", "run_id", "claimed"}: whose bundle that number is
    <model>/claims/bundle-<digest>              {"run_id", "claimed"}: the one run publishing that bundle right now
    <model>/.incoming/<version>-<run>/          local only: a version being assembled, renamed into place whole

Versions are integers and never change once their manifest exists. A bundle's digest covers the model files
(artifacts/**), so pushing the same models again finds the existing version instead of making a new one. A push
first claims its bundle, then its version number, each with a create-if-absent write (S3 `If-None-Match: *`, a hard
link locally). The bundle claim lets one run at a time choose a number for given content, so the same models never get
two versions; the others wait for it to finish and then find its version. The number claim keeps two pushes of
different content out of one version folder; a re-run of the same run (same run id), or the next holder of the bundle
claim, takes a number claimed for the same content up again instead of leaving a gap. A claim whose version never got
a manifest, and a bundle claim left by a killed run, are debris that `registry gc` reports and removes.

Labels move forward only (to a higher version) unless a caller asks for a rollback or promotion, and their history
keeps every version they pointed at, in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelpress.common.errors import UserError
from modelpress.common.names import check_name
from modelpress.common.progress import log
from modelpress.io import storage

MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
LABELS_DIR = "labels"
CLAIMS_DIR = "claims"
INCOMING_DIR = ".incoming"
ARTIFACTS_DIR = "artifacts"
VALIDATION_DIR = "validation"
# Libraries whose versions a manifest records when they are installed.
LINEAGE_LIBRARIES = (
    "modelpress", "tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy", "openvino", "onnxruntime",
    "tf2onnx", "tensorrt", "boto3",
)


def run_folder(output: str) -> str:
    """The run folder of a step output: `modelpress run` writes outputs to <run>/<kind>/<name>."""
    if storage.is_s3(output):
        return output.rstrip("/").rsplit("/", 2)[0]
    return str(Path(output).parent.parent)


def default_registry_uri(output: str) -> str:
    return storage.join(run_folder(output), "registry")


def model_uri(root: str, model: str) -> str:
    return storage.join(root, check_name(model, "model name"))


def release_asset_uri(root: str, model: str) -> str:
    """The URI naming a model's releases for data-aware schedulers (an Airflow Asset): the model's folder in the
    registry, s3://<registry>/<model>, or file:///<registry>/<model> for a local registry."""
    uri = model_uri(root, model)
    return uri if storage.is_s3(uri) else Path(uri).absolute().as_uri()


def version_uri(root: str, model: str, version: int) -> str:
    return storage.join(model_uri(root, model), str(int(version)))


def label_uri(root: str, model: str, label: str) -> str:
    return storage.join(model_uri(root, model), LABELS_DIR, f"{check_name(label, 'label')}.json")


def claim_uri(root: str, model: str, version: int) -> str:
    return storage.join(model_uri(root, model), CLAIMS_DIR, str(int(version)))


BUNDLE_CLAIM_PREFIX = "bundle-"


def bundle_claim_uri(root: str, model: str, digest: str) -> str:
    return storage.join(model_uri(root, model), CLAIMS_DIR, f"{BUNDLE_CLAIM_PREFIX}{digest}")


# --------------------------------------------------------------------------------------------------- listing
def child_names(uri: str) -> list[str]:
    """Names of the immediate sub-folders (S3: common prefixes) of a folder or prefix."""
    return sorted(listing(uri)[0])


def file_names(uri: str) -> list[str]:
    """Names of the files (S3: objects) directly inside a folder or prefix."""
    return sorted(listing(uri)[1])


def listing(uri: str) -> tuple[list[str], list[str]]:
    """(sub-folder names, file names) directly inside a folder or an S3 prefix (one delimited listing)."""
    if not storage.is_s3(uri):
        path = Path(uri)
        entries = list(path.iterdir()) if path.is_dir() else []
        return [p.name for p in entries if p.is_dir()], [p.name for p in entries if p.is_file()]
    loc = storage.S3Location.parse(uri)
    prefix = f"{loc.key}/" if loc.key else ""
    folders: list[str] = []
    files: list[str] = []
    with storage.s3_errors(uri):
        pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix, Delimiter="/")
        for page in pages:
            folders.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            files.extend(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
    return folders, files


def version_folders(root: str, model: str) -> list[int]:
    """Every integer folder under the model, complete or not."""
    return sorted(int(name) for name in child_names(model_uri(root, model)) if name.isdigit())


def list_versions(root: str, model: str) -> list[int]:
    """Complete versions (those with a manifest), oldest first. Half-written versions are invisible."""
    return [v for v in version_folders(root, model) if storage.exists(storage.join(version_uri(root, model, v), MANIFEST_FILE))]


def read_manifest(root: str, model: str, version: int) -> dict[str, Any]:
    uri = storage.join(version_uri(root, model, version), MANIFEST_FILE)
    if not storage.exists(uri):
        known = list_versions(root, model)
        listing = f"its versions: {', '.join(map(str, known))}" if known else "it has no published versions"
        raise UserError(f"model '{model}' has no version {version} in {root}; {listing}")
    return json.loads(storage.read_bytes(uri))


def read_label(root: str, model: str, label: str) -> dict[str, Any] | None:
    uri = label_uri(root, model, label)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def labels_by_version(root: str, model: str) -> dict[int, list[str]]:
    names = file_names(storage.join(model_uri(root, model), LABELS_DIR))
    out: dict[int, list[str]] = {}
    for name in sorted(n for n in names if n.endswith(".json") and not n.startswith(".")):
        label = name[: -len(".json")]
        pointer = read_label(root, model, label)
        if pointer:
            out.setdefault(pointer["version"], []).append(label)
    return out


def move_label(root: str, model: str, label: str, version: int, digest: str, backwards: bool = False) -> bool:
    """Point `label` at a complete version by compare-and-swap; True when this call moved it.

    A label only moves forward (to a higher version) unless `backwards` (an explicit rollback or promotion); the
    version it leaves is appended to its history, so concurrent moves never lose an entry.
    """

    def change(pointer: dict | None) -> dict | None:
        if pointer is not None and (pointer["version"] == version or (version < pointer["version"] and not backwards)):
            return None
        history = [*pointer["history"], pointer["version"]] if pointer is not None else []
        return {"label": label, "version": version, "digest": digest, "updated": _now(), "history": history}

    pointer, moved = storage.update_json(label_uri(root, model, label), change)
    if not moved and pointer is not None and pointer["version"] != version:
        log(f"{model}: label {label} stays at version {pointer['version']}, newer than version {version}")
    return moved


def find_by_digest(root: str, model: str, digest: str) -> int | None:
    for version in reversed(list_versions(root, model)):
        if read_manifest(root, model, version).get("digest") == digest:
            return version
    return None


def resolve_version(root: str, model: str, version: int | None, label: str | None) -> int:
    """An explicit version, a label's version, or the newest version."""
    if version is not None:
        read_manifest(root, model, version)
        return version
    if label is not None:
        pointer = read_label(root, model, label)
        if pointer is None:
            raise UserError(f"model '{model}' has no label '{label}' in {root}; push with that label or pass --version")
        return int(pointer["version"])
    versions = list_versions(root, model)
    if not versions:
        raise UserError(f"model '{model}' has no published versions in {root}; run push first or check --uri")
    return versions[-1]


def published_artifact(root: str, model: str, label: str, name: str) -> dict[str, Any] | None:
    """The published artifact a new one is compared with: same name if the release has it, else its serving model.

    None when nothing is published under `label` yet.
    """
    pointer = read_label(root, model, label)
    if pointer is None:
        return None
    version = int(pointer["version"])
    manifest = read_manifest(root, model, version)
    entries = {entry["name"]: entry for entry in manifest["artifacts"]}
    entry = entries.get(name) or entries[manifest["serving_artifact"]]
    return {
        "version": version,
        "name": entry["name"],
        "metrics": entry["metrics"],
        "uri": storage.join(version_uri(root, model, version), ARTIFACTS_DIR, entry["name"]),
    }


# --------------------------------------------------------------------------------------------------- writing
def read_json_claim(uri: str) -> dict | None:
    """A claim's content, None when it is gone (released meanwhile). Claims of older releases hold the digest only."""
    data = storage.read_if_present(uri)
    if data is None:
        return None
    raw = data.decode(errors="replace")
    try:
        claim = json.loads(raw)
    except ValueError:
        claim = None
    return claim if isinstance(claim, dict) else {"digest": raw.strip(), "run_id": None, "claimed": None}


def read_claim(root: str, model: str, version: int) -> dict | None:
    """A version's claim: digest, run_id, claimed (epoch seconds)."""
    return read_json_claim(claim_uri(root, model, version))


def claim_version(root: str, model: str, version: int, digest: str, run_id: str) -> dict:
    """Try to reserve a version number for the bundle `digest` pushed by `run_id`, while holding that bundle's claim;
    the claim that holds the number afterwards. It is this push's when its run_id is ours: claimed now, or taken up
    from an earlier claim of this run (a re-run, whose bundle may differ) or of this very bundle (whose run is gone,
    since this run holds the bundle claim)."""
    uri = claim_uri(root, model, version)
    claim = {"digest": digest, "run_id": run_id, "claimed": time.time()}
    while not storage.create_exclusive(uri, json.dumps(claim).encode()):
        held = read_json_claim(uri)
        if held is None:
            continue  # given back meanwhile: try again
        if held["run_id"] != run_id and held["digest"] != digest:
            return held
        if held != claim:
            storage.write_bytes(uri, json.dumps(claim).encode())
        break
    return claim


@contextlib.contextmanager
def bundle_claim(root: str, model: str, digest: str, run_id: str, timeout_s: float) -> Iterator[None]:
    """Hold the one claim to publish the bundle `digest`, waiting while another run holds it; given back on leaving,
    whether the push succeeded or failed. A claim of this run (killed before giving it back) is taken up again."""
    uri = bundle_claim_uri(root, model, digest)
    claim = json.dumps({"run_id": run_id, "claimed": time.time()}).encode()
    deadline = time.monotonic() + timeout_s
    announced = False
    while not storage.create_exclusive(uri, claim):
        held = read_json_claim(uri)
        if held is not None and held.get("run_id") == run_id:
            break
        if time.monotonic() > deadline:
            raise UserError(
                f"run {held and held.get('run_id')} has been publishing these models of '{model}' (digest {digest[:12]}) "
                f"for over {timeout_s:.0f}s; retry later, or if that run is dead: modelpress registry gc {model} --delete"
            )
        if held is not None and not announced:
            log(f"{model}: run {held.get('run_id')} is publishing the same models; waiting for it")
            announced = True
        time.sleep(0.5)
    try:
        yield
    finally:
        storage.remove(uri)


def claimed_versions(root: str, model: str) -> list[int]:
    return sorted(int(name) for name in file_names(storage.join(model_uri(root, model), CLAIMS_DIR)) if name.isdigit())


def bundle_claims(root: str, model: str) -> list[str]:
    """The digests whose bundle claims are held (by running pushes, or left by killed ones)."""
    names = file_names(storage.join(model_uri(root, model), CLAIMS_DIR))
    return sorted(name.removeprefix(BUNDLE_CLAIM_PREFIX) for name in names if name.startswith(BUNDLE_CLAIM_PREFIX))


def open_claim(root: str, model: str, digest: str, run_id: str) -> int | None:
    """The lowest claimed, still incomplete version held by this run or for this bundle."""
    complete = set(list_versions(root, model))
    for version in claimed_versions(root, model):
        held = read_claim(root, model, version) if version not in complete else None
        if held is not None and (held["run_id"] == run_id or held["digest"] == digest):
            return version
    return None


def bundle_digest(files: dict[str, str]) -> str:
    """sha256 over the sorted (path, sha256) pairs of the model files: the identity of a release's content."""
    lines = "".join(f"{path}\t{sha}\n" for path, sha in sorted(files.items()) if path.startswith(f"{ARTIFACTS_DIR}/"))
    return hashlib.sha256(lines.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------- lineage
def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in LINEAGE_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """MODELPRESS_GIT_COMMIT (set by CI or the image build), else the commit of the working directory, if any."""
    if os.environ.get("MODELPRESS_GIT_COMMIT"):
        return os.environ["MODELPRESS_GIT_COMMIT"]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
