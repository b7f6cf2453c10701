from pydantic import Field

from .._core.names import Name
from .._core.spec import DataSpec, EvaluationSpec, Gates, PushSpec, StepConfig


class ValidateConfig(StepConfig):
    name: Name = Field(..., description="the artifact's name in reports (e.g. train, prune, tflite_int8)")
    data: DataSpec
    gates: Gates = Field(default_factory=Gates)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    push: PushSpec | None = Field(None, description="the registry gates.max_drop_vs_serving compares with")
