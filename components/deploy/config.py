from pydantic import Field

from .._core.spec import ServingSpec, StepConfig


class DeployConfig(StepConfig):
    serving: ServingSpec = Field(default_factory=ServingSpec)
