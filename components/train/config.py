from pydantic import Field

from .._core.spec import DataSpec, ModelSpec, StepConfig, TrainSpec


class TrainConfig(StepConfig):
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
