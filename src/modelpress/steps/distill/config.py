from typing import NamedTuple

from pydantic import Field, field_validator

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.ml.keras_artifact import KerasInputConfig

# What the validation split chooses from when the config leaves a setting unset.
TEMPERATURES = (2.0, 4.0, 8.0)
ALPHAS = (0.1, 0.5, 0.9)
MIXUPS = (0.0, 0.2)
# What a trial must beat: mostly the teacher's soft targets at a moderate temperature, no mixup (Hinton et al. 2015's
# regime). Over 5 seeds on digits it beat choosing whichever trial scored highest on validation (steps/distill/README.md).
DEFAULTS = {"temperature": 4.0, "alpha": 0.1, "mixup": 0.0}


class Settings(NamedTuple):
    """One distillation recipe: the loss's temperature and label weight, and the transfer set's mixup."""

    temperature: float
    alpha: float
    mixup: float


class DistillConfig(KerasInputConfig):
    student: ModelSpec = Field(..., description="the smaller model to train: a zoo model or your builder, e.g. {zoo: mlp}")
    temperature: float | None = Field(
        None,
        description="T > 0: softens both models' logits; T^2 rescales the soft loss's gradients. "
        f"Unset: {DEFAULTS['temperature']:g} unless a trial of {', '.join(f'{t:g}' for t in TEMPERATURES)} is clearly better on the validation split",
    )
    alpha: float | None = Field(
        None,
        description="weight of the hard-label loss in [0, 1]; 1 - alpha weighs the teacher's soft targets. "
        f"Unset: {DEFAULTS['alpha']:g} unless a trial of {', '.join(f'{a:g}' for a in ALPHAS)} is clearly better on the validation split",
    )
    mixup: float | None = Field(
        None,
        ge=0,
        description="transfer set: each batch blended with a shuffled copy of itself, weights from Beta(mixup, mixup), "
        f"and labelled by the teacher; 0 turns it off. Unset: {DEFAULTS['mixup']:g} unless a trial of {', '.join(f'{m:g}' for m in MIXUPS)} is clearly better on the validation split",
    )
    trial_epochs: int | None = Field(
        None, ge=1, description="epochs of each trial when a setting is chosen on validation; default a fifth of the student's"
    )
    fallback_to_scratch: bool = Field(
        True, description="hand on the student trained from scratch when it beats the distilled one on the validation split"
    )
    epochs: int | None = Field(None, ge=1, description="student training epochs (distilled and scratch); default train.epochs")
    learning_rate: float | None = Field(None, gt=0, description="student learning rate; default train.learning_rate")
    data: DataSpec = Field(..., description="the workflow's data: the student learns on its training split")
    train: TrainSpec = Field(default_factory=TrainSpec, description="the workflow's batch size, optimizer and seed")

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"temperature must be > 0 (got {value}): it divides the logits; 1 keeps them, 2-8 soften them")
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha_share(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError(
                f"alpha must be in [0, 1] (got {value}): it is the weight of the label loss, 1 - alpha that of the teacher"
            )
        return value

    def student_training(self) -> TrainSpec:
        """The workflow's train settings with this step's epochs and learning rate where set."""
        update = {"epochs": self.epochs, "learning_rate": self.learning_rate}
        return self.train.model_copy(update={k: v for k, v in update.items() if v is not None})

    def chosen_on_validation(self) -> list[str]:
        """The settings this config leaves to the validation split."""
        return [name for name in Settings._fields if getattr(self, name) is None]

    def default(self) -> Settings:
        """The settings the trials must beat: the config's where set, DEFAULTS where not."""
        return Settings(**{name: DEFAULTS[name] if getattr(self, name) is None else getattr(self, name) for name in Settings._fields})

    def loss_candidates(self) -> list[tuple[float, float]]:
        """The (temperature, alpha) pairs to try: the set values, the grids where unset."""
        temperatures = (self.temperature,) if self.temperature is not None else TEMPERATURES
        alphas = (self.alpha,) if self.alpha is not None else ALPHAS
        return [(t, a) for t in temperatures for a in alphas]

    def mixup_candidates(self) -> tuple[float, ...]:
        return (self.mixup,) if self.mixup is not None else MIXUPS

    def trial_training(self) -> TrainSpec:
        """A search trial: the student's training, shortened."""
        student = self.student_training()
        return student.model_copy(update={"epochs": self.trial_epochs or max(1, student.epochs // 5)})
