import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.training import TrainSpec
from modelpress.ml.keras_artifact import KerasInputConfig

METHODS = ("magnitude", "structured", "lottery")
# An option -> the methods it means something for; any other method rejects it, so a misplaced key never goes unnoticed.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "sparsity": ("magnitude", "lottery"),
    "schedule": ("magnitude",),
    "pattern": ("magnitude",),
    "ratio": ("structured",),
    "criterion": ("structured",),
    "activation_samples": ("structured",),
    "allocation": ("structured",),
    "sensitivity_samples": ("structured",),
    "teacher": ("structured",),
    "temperature": ("structured",),
    "alpha": ("structured",),
    "rounds": ("lottery",),
    "random_init_control": ("lottery",),
}


class PruneConfig(KerasInputConfig):
    method: Literal[METHODS] = Field(
        "magnitude",
        description="magnitude (tfmot, zeros in place), structured (removes whole neurons/filters), lottery (rewind rounds)",
    )
    sparsity: float = Field(0.5, description="magnitude, lottery: share of each layer's kernel set to zero, in [0, 1)")
    schedule: Literal["polynomial", "constant"] = Field(
        "polynomial", description="magnitude: PolynomialDecay (0 -> sparsity) or ConstantSparsity during fine-tuning"
    )
    pattern: str | None = Field(
        None, description="magnitude: 'N:M' structured sparsity, at most N non-zeros in every M input weights (e.g. 2:4)"
    )
    layers: list[str] | None = Field(
        None, description="layers to prune; default: every layer with a kernel (structured: every hidden Dense/Conv2D)"
    )
    ratio: float = Field(
        0.5,
        description="structured: share of channels removed, in (0, 1): of each group's (allocation uniform) or of all "
        "removable channels together (allocation sensitivity)",
    )
    allocation: Literal["uniform", "sensitivity"] = Field(
        "uniform",
        description="structured: every group loses `ratio` of its channels, or each group's share is chosen from a "
        "sensitivity pass on the validation split so that the least accuracy is lost",
    )
    sensitivity_samples: int = Field(512, ge=16, description="structured, allocation sensitivity: validation rows measured")
    criterion: Literal["magnitude", "activation"] = Field(
        "magnitude", description="structured: rank units by kernel L1 norm or by mean |activation| on training rows"
    )
    activation_samples: int = Field(512, ge=16, description="structured, criterion activation: training rows measured")
    teacher: bool = Field(
        True, description="structured: fine-tune on the unpruned model's softened logits plus the labels (needs a 'logits' layer)"
    )
    temperature: float = Field(4.0, gt=0, description="structured, teacher: softens both models' logits")
    alpha: float = Field(0.5, ge=0, le=1, description="structured, teacher: weight of the label loss; 1 - alpha weighs the teacher")
    rounds: int = Field(3, ge=1, le=20, description="lottery: prune-rewind-retrain rounds; each removes the same share")
    random_init_control: bool = Field(
        False, description="lottery: also train the final mask from fresh random weights and record its accuracy"
    )
    epochs: int | None = Field(None, ge=1, description="fine-tuning epochs (lottery: per round); default train.epochs")
    learning_rate: float | None = Field(None, gt=0, description="fine-tuning learning rate; default train.learning_rate")
    data: DataSpec = Field(..., description="the workflow's data: fine-tuning, activation statistics, test accuracy")
    train: TrainSpec = Field(default_factory=TrainSpec, description="the workflow's training settings (optimizer, batch)")

    @model_validator(mode="before")
    @classmethod
    def _options_fit_method(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        method = data.get("method", "magnitude")
        for option, methods in METHOD_OPTIONS.items():
            if option in data and method in METHODS and method not in methods:
                raise ValueError(f"option '{option}' does not apply to method {method}; it applies to {', '.join(methods)}")
        if "pattern" in data and data["pattern"] is not None:
            for option in ("sparsity", "schedule"):
                if option in data:
                    raise ValueError(f"option '{option}' does not apply with pattern {data['pattern']!r}: the pattern fixes the sparsity")
        return data

    @field_validator("sparsity")
    @classmethod
    def _sparsity_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"sparsity {value} is outside [0, 1): it is the share of weights set to zero, e.g. 0.5")
        return value

    @field_validator("ratio")
    @classmethod
    def _ratio_range(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"ratio {value} is outside (0, 1): it is the share of channels removed, e.g. 0.5")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_form(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = re.fullmatch(r"(\d+):(\d+)", value)
        if not match or not 0 < int(match[1]) < int(match[2]):
            raise ValueError(f"pattern {value!r} must be 'N:M' with 0 < N < M (N non-zeros in every M weights), e.g. '2:4'")
        return value

    @property
    def kept_and_group(self) -> tuple[int, int]:
        """The pattern as (non-zeros kept, group size)."""
        kept, group = (self.pattern or "").split(":")
        return int(kept), int(group)

    def fine_tuning(self) -> TrainSpec:
        """The workflow's train settings with this step's epochs and learning rate where set."""
        update = {"epochs": self.epochs, "learning_rate": self.learning_rate}
        return self.train.model_copy(update={k: v for k, v in update.items() if v is not None})
