"""Model artifacts: a folder of model files plus `artifact.json` (format, lineage, hashes, metrics).

`artifact.json` is written last; a folder or prefix without it is not an artifact.
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

from pydantic import BaseModel, Field

from . import storage
from .errors import UserError

ARTIFACT_FILE = storage.MARKER


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
    from .. import __version__

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
    try:
        return ArtifactMeta.model_validate_json(storage.read_bytes(marker))
    except ValueError as exc:
        raise UserError(f"{marker} is unreadable ({str(exc).splitlines()[0]}); re-run the step that makes it") from None


@contextlib.contextmanager
def open_artifact(uri: str, verify: bool = True) -> Iterator[tuple[Path, ArtifactMeta]]:
    """A local folder holding the artifact, and its metadata; file hashes are checked against `artifact.json`."""
    meta = read_meta(uri)
    with storage.local_copy(uri) as folder:
        if verify:
            for relative, expected in meta.files.items():
                path = folder / relative
                if not path.is_file():
                    raise UserError(f"artifact {uri} is missing {relative}; it was damaged, re-run the step that makes it")
                if sha256_file(path) != expected:
                    raise UserError(f"artifact {uri}: {relative} does not match its sha256; it was altered or damaged")
        yield folder, meta


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
