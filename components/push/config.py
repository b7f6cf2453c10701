from pydantic import Field

from .._core.spec import PushSpec, StepConfig


class PushConfig(StepConfig):
    push: PushSpec = Field(default_factory=PushSpec)
    workflow_hash: str | None = Field(None, description="sha256 of the workflow spec, recorded in the manifest's lineage")
