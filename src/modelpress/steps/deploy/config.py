from pydantic import Field

from modelpress.contract.publishing import ServingSpec
from modelpress.contract.schema import StepConfig


class DeployConfig(StepConfig):
    serving: ServingSpec = Field(default_factory=ServingSpec)
