from pydantic import Field

from modelpress.contract.publishing import PushSpec
from modelpress.contract.schema import StepConfig


class PushConfig(StepConfig):
    push: PushSpec = Field(default_factory=PushSpec)
    workflow_hash: str | None = Field(None, description="sha256 of the workflow spec, recorded in the manifest's lineage")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._:+-]{1,128}$",
        description="the run this push belongs to, recorded in its version claim so a retry takes the claim back; "
        "default: derived from the push's output URI",
    )
