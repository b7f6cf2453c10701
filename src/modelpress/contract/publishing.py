"""The push and serving sections: where blessed models are published and served."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from modelpress.common.names import NAME_PATTERN
from modelpress.contract.schema import StrictModel


class PushSpec(StrictModel):
    """Where blessed artifacts are published as numbered release bundles (<uri>/<model>/<version>/)."""

    uri: str | None = Field(None, description="s3://bucket/prefix or a local folder; default <run>/registry")
    model_name: str | None = Field(None, pattern=NAME_PATTERN, description="default: the workflow name")
    labels: list[str] = Field(
        default_factory=lambda: ["current"], description="registry labels moved to the new version once it is complete"
    )
    version: int | None = Field(None, ge=1, description="pin the version number (e.g. a CI build); default: next integer")
    require_all_blessed: bool = Field(False, description="refuse the push when any artifact is unblessed (default: skip those)")
    part_size_mb: int = Field(8, ge=5, le=512, description="multipart upload part size; memory use is about 10 parts")
    max_concurrency: int = Field(4, ge=1, le=32, description="parallel part uploads per file")
    retries: int = Field(5, ge=0, le=20, description="retries of a file upload after a transient error (backoff doubles)")

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: list[str]) -> list[str]:
        for label in value:
            if not re.fullmatch(NAME_PATTERN, label):
                raise ValueError(f"label {label!r}: use lower-case letters, digits, '-' or '_'")
        return value


class KServeSpec(StrictModel):
    """A KServe InferenceService per model: TF Serving runtime for a SavedModel, OpenVINO Model Server for an IR."""

    namespace: str = Field("modelpress", description="namespace of the InferenceService")
    service_account: str = Field(
        "modelpress-runner", description="ServiceAccount of the predictor; its S3 credentials let KServe read storageUri"
    )
    canary_traffic_percent: int = Field(10, ge=1, le=99, description="share of requests the new release gets until promoted")
    apply: bool = Field(False, description="apply it on the cluster (in-cluster account or kubeconfig); false: write the manifest only")
    ready_timeout_s: float = Field(600.0, gt=0, description="how long to wait for the new revision to become Ready")


class ServingSpec(StrictModel):
    """How the final model is served: a TF Serving base path, with gRPC/REST addresses to reload and test, or KServe.

    kind tfserving (the default) writes the base path TF Serving polls; kind kserve an InferenceService."""

    kind: Literal["tfserving", "kserve"] = Field("tfserving", description="TF Serving base path (default) or a KServe InferenceService")
    kserve: KServeSpec = Field(default_factory=KServeSpec, description="kind kserve: where and how the InferenceService rolls out")

    base_path: str | None = Field(None, description="model base path TF Serving polls; default <run>/serving")
    mount_path: str | None = Field(
        None, description="the base path as the TF Serving container sees it (e.g. /models); default: base_path"
    )
    model_name: str | None = Field(None, pattern=NAME_PATTERN, description="default: push.model_name, else the workflow name")
    grpc_address: str | None = Field(None, description="host:port of TF Serving's gRPC API; unset: write files only")
    rest_address: str | None = Field(None, description="http://host:port of TF Serving's REST API; set: status and Predict use REST")
    timeout_s: float = Field(120.0, gt=0, description="how long to wait for the new version to become AVAILABLE")
    tolerance: float = Field(1e-4, ge=0, description="largest absolute difference allowed between served and validated outputs")


