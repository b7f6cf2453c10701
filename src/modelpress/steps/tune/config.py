from pydantic import Field

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.schema import StepConfig
from modelpress.contract.training import ModelSpec, TrainSpec, TuneSpec


class TuneConfig(StepConfig):
    model: ModelSpec = Field(..., description="the workflow's model; model.params.* in the space override its params")
    data: DataSpec = Field(..., description="the workflow's data: trials train on its training split, are ranked on val")
    train: TrainSpec = Field(default_factory=TrainSpec, description="the workflow's train settings the trials start from")
    tune: TuneSpec = Field(..., description="the search: algorithm, trials, epochs per trial, objective and space")
