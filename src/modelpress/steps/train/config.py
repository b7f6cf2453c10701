from pydantic import Field

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.schema import StepConfig
from modelpress.contract.training import ModelSpec, TrainSpec


class TrainConfig(StepConfig):
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
