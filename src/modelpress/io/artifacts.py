"""Model artifacts: a folder of model files plus `artifact.json` (format, lineage, hashes, metrics), and the
blessing validate writes about one.

`artifact.json` is written last; a folder or prefix without it is not an artifact. An artifact's content digest
covers `artifact.json` and every file it lists; a blessing records that digest, so what push and deploy publish is
exactly what validate measured.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from modelpress.common.errors import UserError
from modelpress.common.names import Name
from modelpress.io import storage

ARTIFACT_FILE = storage.MARKER
BLESSING_FILE = "blessing.json"
# A quantizer's per-layer error report (tflite_litert): in its artifact, and in the validation that rejected it.
LAYER_ERRORS_FILE = "layer_errors.json"
# Which layers, each compressed alone, cost the most accuracy: written by validate beside a rejection's blessing.
SENSITIVITY_FILE = "sensitivity.json"


def check_relative(path: str) -> str:
    """A path inside an artifact folder: relative, without '..' or empty parts (it is joined to the folder)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"'{path}' is not a plain relative path inside the artifact folder")
    return path


class ArtifactMeta(BaseModel):
    """The sidecar. Field names are a contract: tools and dashboards read them."""

    format: str = Field(..., description="e.g. keras, tflite_int8, openvino_fp32, onnx")
    step: str = Field(..., description="the step that produced it")
    model_path: str = Field(..., description="the servable model inside the folder (file or sub-folder)")
    parent: str | None = Field(None, description="URI of the artifact this one was made from")
    config_hash: str
    data_hash: str | None = None
    calibration_hash: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict, description="what the step did, e.g. sparsity per layer")
    files: dict[str, str] = Field(default_factory=dict, description="sha256 of every file, by relative path")
    created: float = Field(default_factory=time.time)
    modelpress_version: str = ""

    @field_validator("model_path")
    @classmethod
    def _model_inside(cls, value: str) -> str:
        return check_relative(value)

    @field_validator("files")
    @classmethod
    def _files_inside(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            check_relative(path)
        return value


class Blessing(BaseModel):
    """`blessing.json`, validate's verdict on one artifact. Field names are a contract: push, deploy, the runner and
    both orchestrator adapters read `blessed`, `name`, `format`, `thresholds` and `metrics`."""

    name: Name = Field(..., description="the artifact's name in the run (e.g. train, tflite_int8)")
    artifact: str = Field(..., description="absolute URI of the artifact validated")
    artifact_digest: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="content digest of that artifact")
    format: str
    runtime: str
    blessed: bool
    reasons: list[str] = Field(default_factory=list, description="every failed gate, one sentence each")
    metrics: dict[str, Any]
    baseline: dict[str, Any] | None = None
    parent: str | None = None
    serving: dict[str, Any] | None = None
    thresholds: dict[str, Any] = Field(default_factory=dict)
    gates: list[dict[str, Any]] = Field(default_factory=list)
    data_hash: str | None = None
    artifact_data_hash: str | None = None

    @field_validator("artifact")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not (storage.is_s3(value) or Path(value).is_absolute()):
            raise ValueError(f"artifact '{value}' is relative; validate records absolute URIs")
        return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_size(path: Path) -> dict[str, int]:
    """Raw bytes and gzip bytes (each file gzipped, summed) of a model file or folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    raw = sum(p.stat().st_size for p in files)
    gz = sum(len(gzip.compress(p.read_bytes(), compresslevel=9, mtime=0)) for p in files)
    return {"size_bytes": raw, "size_gzip_bytes": gz}


def finish(folder: Path, meta: ArtifactMeta) -> ArtifactMeta:
    """Hash every file, add sizes, and write `artifact.json` into a staged artifact folder. Call it last."""
    from modelpress import __version__

    model = folder / meta.model_path
    if not model.exists():
        raise RuntimeError(f"artifact model_path {meta.model_path} was not written")
    meta.files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ARTIFACT_FILE
    }
    meta.metrics = {**model_size(model), **meta.metrics}
    meta.modelpress_version = __version__
    (folder / ARTIFACT_FILE).write_text(meta.model_dump_json(indent=2))
    return meta


def read_meta(uri: str) -> ArtifactMeta:
    marker = storage.join(uri, ARTIFACT_FILE)
    if not storage.exists(marker):
        if storage.exists(uri):
            raise UserError(f"{uri} is not a complete ModelPress artifact (no {ARTIFACT_FILE}); re-run the step that makes it")
        raise UserError(f"artifact {uri} not found; check the URI or run the step that produces it")
    return parse_meta(storage.read_bytes(marker), marker)


def parse_meta(raw: bytes, where: str) -> ArtifactMeta:
    try:
        return ArtifactMeta.model_validate_json(raw)
    except ValueError as exc:
        raise UserError(f"{where} is unreadable ({' '.join(str(exc).split())[:200]}); re-run the step that makes it") from None


@contextlib.contextmanager
def open_artifact(uri: str, verify: bool = True) -> Iterator[tuple[Path, ArtifactMeta]]:
    """A local folder holding the artifact, and its metadata as found in that folder. With `verify`, every file
    `artifact.json` lists must match its sha256 and the folder must hold no other file."""
    read_meta(uri)  # a missing or incomplete artifact is one clear line before anything is downloaded
    with storage.local_copy(uri) as folder:
        if not folder.is_dir():
            raise UserError(f"{uri} is a file; an artifact is a folder with {ARTIFACT_FILE}")
        meta = parse_meta((folder / ARTIFACT_FILE).read_bytes(), storage.join(uri, ARTIFACT_FILE))
        if verify:
            check_files(folder, meta, uri)
        yield folder, meta


def check_files(folder: Path, meta: ArtifactMeta, uri: str) -> None:
    """Every listed file present with its sha256, and nothing else in the folder."""
    for relative, expected in meta.files.items():
        path = folder / relative
        if not path.is_file():
            raise UserError(f"artifact {uri} is missing {relative}; it was damaged, re-run the step that makes it")
        if sha256_file(path) != expected:
            raise UserError(f"artifact {uri}: {relative} does not match its sha256; it was altered or damaged")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    unlisted = sorted(present - set(meta.files) - {ARTIFACT_FILE})
    if unlisted:
        raise UserError(
            f"artifact {uri} holds files {ARTIFACT_FILE} does not list ({', '.join(unlisted[:3])}); remove them or "
            "re-run the step that makes it"
        )


def content_digest(folder: Path, meta: ArtifactMeta) -> str:
    """sha256 over `artifact.json` and the sha256 of every file it lists (checked by open_artifact): the identity
    of an artifact's content, wherever it is stored."""
    return digest_of(sha256_file(folder / ARTIFACT_FILE), meta)


def stored_digest(uri: str) -> tuple[str, ArtifactMeta]:
    """content_digest of a stored artifact from its `artifact.json` alone (nothing else is downloaded), and its meta."""
    raw = storage.read_bytes(storage.join(uri, ARTIFACT_FILE))
    meta = parse_meta(raw, storage.join(uri, ARTIFACT_FILE))
    return digest_of(hashlib.sha256(raw).hexdigest(), meta), meta


def digest_of(meta_sha256: str, meta: ArtifactMeta) -> str:
    lines = [f"{ARTIFACT_FILE}\t{meta_sha256}", *(f"{path}\t{sha}" for path, sha in sorted(meta.files.items()))]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_blessing(validation_uri: str) -> tuple[Blessing, str]:
    """A validate output's blessing and the sha256 of its bytes (what a release records it published)."""
    marker = storage.join(validation_uri, BLESSING_FILE)
    if not storage.exists(marker):
        raise UserError(f"{validation_uri} is not a validate output (no {BLESSING_FILE}); pass the folder the validate step wrote")
    raw = storage.read_bytes(marker)
    try:
        return Blessing.model_validate_json(raw), hashlib.sha256(raw).hexdigest()
    except ValueError as exc:
        problem = " ".join(str(exc).split())[:200]
        raise UserError(f"{marker} is not a blessing this version can trust ({problem}); validate the artifact again") from None


def check_blessed_content(blessing: Blessing, folder: Path, meta: ArtifactMeta, uri: str) -> str:
    """The artifact's digest, when it is the content the blessing approved; otherwise one line saying so."""
    digest = content_digest(folder, meta)
    if digest != blessing.artifact_digest or meta.format != blessing.format:
        raise UserError(
            f"{uri} is not the artifact {blessing.name} was validated as (digest {digest[:12]}, blessed "
            f"{blessing.artifact_digest[:12]}); it changed after validation: validate it again before publishing"
        )
    return digest


def write_json(uri: str, payload: Any) -> None:
    storage.write_bytes(uri, json.dumps(payload, indent=2, sort_keys=False, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
