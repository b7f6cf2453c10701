"""The base every spec section and step config is built on: strict keys, stable hashes, storage settings."""

from __future__ import annotations

import difflib
import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Rejects unknown keys with the closest valid key, so a misspelling never silently becomes a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        valid = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        for key in data:
            if key not in valid:
                raise ValueError(unknown_key_message(str(key), valid))
        return data


def unknown_key_message(key: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return f"unknown key '{key}'; {hint}"


class StorageSettings(StrictModel):
    """S3-compatible object storage. Unset values come from the standard AWS environment variables."""

    endpoint_url: str | None = Field(None, description="e.g. http://minio.storage:9000; default AWS_ENDPOINT_URL or AWS")
    region: str | None = Field(None, description="default AWS_REGION, else us-east-1")
    access_key_id: str | None = Field(None, description="prefer AWS_ACCESS_KEY_ID from a Secret over a value here")
    secret_access_key: str | None = Field(None, description="prefer AWS_SECRET_ACCESS_KEY from a Secret")


# StorageSettings fields that hold credentials: never echoed in an error, never compiled into a pipeline or a DAG.
CREDENTIAL_FIELDS = ("access_key_id", "secret_access_key")



def spec_hash(model: BaseModel) -> str:
    """Stable sha256 of a config: what a step ran with, recorded in its artifact."""
    return hashlib.sha256(model.model_dump_json(exclude_none=False).encode()).hexdigest()


class StepConfig(StrictModel):
    """Base of every step's config: what `modelpress step NAME --config JSON` accepts."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
