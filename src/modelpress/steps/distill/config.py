from pydantic import Field, field_validator

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.ml.keras_artifact import KerasInputConfig


class DistillConfig(KerasInputConfig):
    student: ModelSpec = Field(..., description="the smaller model to train: a zoo model or your builder, e.g. {zoo: mlp}")
    temperature: float = Field(4.0, description="T > 0: softens both models' logits; T^2 rescales the soft loss's gradients")
    alpha: float = Field(
        0.1, description="weight of the hard-label loss in [0, 1]; 1 - alpha weighs the teacher's soft targets"
    )
    epochs: int | None = Field(None, ge=1, description="student training epochs (distilled and scratch); default train.epochs")
    learning_rate: float | None = Field(None, gt=0, description="student learning rate; default train.learning_rate")
    data: DataSpec = Field(..., description="the workflow's data: the student learns on its training split")
    train: TrainSpec = Field(default_factory=TrainSpec, description="the workflow's batch size, optimizer and seed")

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"temperature must be > 0 (got {value}): it divides the logits; 1 keeps them, 2-8 soften them")
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha_share(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(
                f"alpha must be in [0, 1] (got {value}): it is the weight of the label loss, 1 - alpha that of the teacher"
            )
        return value

    def student_training(self) -> TrainSpec:
        """The workflow's train settings with this step's epochs and learning rate where set."""
        update = {"epochs": self.epochs, "learning_rate": self.learning_rate}
        return self.train.model_copy(update={k: v for k, v in update.items() if v is not None})
