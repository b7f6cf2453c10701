from pydantic import Field

from modelpress.common.names import Name
from modelpress.contract.compression import EvaluationSpec, Gates
from modelpress.contract.data_sources import DataSpec
from modelpress.contract.publishing import PushSpec
from modelpress.ml.keras_artifact import KerasInputConfig


class ValidateConfig(KerasInputConfig):
    """`model` (the workflow's): whose builder package may be imported to load the parent Keras model, which the
    per-layer sensitivity of a rejected artifact compresses layer by layer."""

    name: Name = Field(..., description="the artifact's name in reports (e.g. train, prune, tflite_int8)")
    data: DataSpec
    gates: Gates = Field(default_factory=Gates)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    push: PushSpec | None = Field(None, description="the registry gates.max_drop_vs_serving compares with")
