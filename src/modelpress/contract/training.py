"""The model, train and tune sections: the architecture, how it is trained, and the search over both."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from modelpress.contract.schema import StrictModel

ZOO_MODELS = ("mlp", "small_cnn", "mobilenet_v2", "resnet")


class ModelSpec(StrictModel):
    zoo: str | None = Field(None, description="a built-in architecture: mlp (300-150 dense), small_cnn, mobilenet_v2, resnet")
    builder: str | None = Field(
        None, description="your own 'package.module:function(input_shape, num_classes, **params)' returning a keras Model"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="architecture parameters (e.g. alpha, input_size)")

    @field_validator("zoo")
    @classmethod
    def _known_zoo(cls, value: str | None) -> str | None:
        if value is not None and value not in ZOO_MODELS:
            close = difflib.get_close_matches(value, ZOO_MODELS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "or set 'builder: package.module:function'"
            raise ValueError(f"unknown zoo model '{value}'; choose one of {', '.join(ZOO_MODELS)} {hint}")
        return value

    @field_validator("builder")
    @classmethod
    def _builder_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(f"builder '{value}' must look like 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.zoo is None) == (self.builder is None):
            raise ValueError("set exactly one of 'zoo' (mlp, small_cnn, mobilenet_v2, resnet) or 'builder' (package.module:function)")
        return self



class TrainSpec(StrictModel):
    epochs: int = Field(20, ge=1, description="passes over the training split")
    batch_size: int = Field(32, ge=1, description="examples per gradient step")
    optimizer: Literal["adam", "sgd", "rmsprop"] = Field("adam", description="the Keras optimizer")
    learning_rate: float = Field(1e-3, gt=0, description="the optimizer's learning rate")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: the learning rate decays to 0 over the run's epochs (the last epochs settle the weights)"
    )
    seed: int = Field(0, description="seeds weight initialisation and shuffling")
    mixed_precision: bool = Field(False, description="mixed_float16 where the hardware supports it")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop when val accuracy stalls this many epochs")
    workers: int = Field(1, ge=1, description="> 1 trains with MultiWorkerMirroredStrategy (a TFJob on the cluster)")


# ----------------------------------------------------------------------------------------------------------- tune
TUNABLE_TRAIN = ("learning_rate", "batch_size", "optimizer")
MODEL_PARAM_PREFIX = "model.params."


class SearchRange(StrictModel):
    """A numeric range to search; whole-number bounds on an integer hyperparameter give integers."""

    min: float = Field(..., description="lowest value")
    max: float = Field(..., description="highest value (> min)")
    sampling: Literal["linear", "log"] = Field("linear", description="log: even in log space (learning rates)")
    step: float | None = Field(None, gt=0, description="spacing between values, e.g. 16 for batch sizes")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.min >= self.max:
            raise ValueError(f"min {self.min:g} >= max {self.max:g}; give min < max, or a list to fix one value")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"log sampling needs min > 0 (got {self.min:g})")
        return self


class TuneSpec(StrictModel):
    """Hyperparameter search run before training (keras-tuner locally, Katib on the cluster); train uses the best."""

    algorithm: Literal["random", "bayesian", "hyperband"] = Field("random", description="the search strategy")
    max_trials: int | None = Field(
        None, ge=1, description="random, bayesian: configurations tried (default 10); hyperband's brackets set its own"
    )
    epochs: int = Field(5, ge=1, description="training epochs per trial (hyperband: the most any trial gets)")
    factor: int | None = Field(None, ge=2, description="hyperband: 1/factor of the trials go on to the next round (default 3)")
    objective: Literal["val_accuracy", "val_loss"] = Field("val_accuracy", description="the validation metric trials are ranked by")
    seed: int = Field(0, description="seeds the search; every trial's model starts from train.seed")
    space: dict[str, Any] = Field(
        ...,
        description="hyperparameter -> {min, max, sampling, step} or a list of choices; names: "
        f"{', '.join(TUNABLE_TRAIN)} or {MODEL_PARAM_PREFIX}<name>",
    )

    @field_validator("space")
    @classmethod
    def _valid_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("no hyperparameters to search; add one, e.g. learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}")
        return {name: check_search_entry(name, entry) for name, entry in value.items()}

    @model_validator(mode="after")
    def _algorithm_options(self) -> TuneSpec:
        if self.algorithm == "hyperband" and self.max_trials is not None:
            raise ValueError("max_trials does not apply to hyperband: its brackets set the trials from epochs and factor")
        if self.algorithm != "hyperband" and self.factor is not None:
            raise ValueError(f"factor applies to hyperband only, not to {self.algorithm}")
        return self


def is_integer_range(name: str, entry: SearchRange) -> bool:
    """batch_size is an integer; a model parameter is when its bounds and step are whole numbers."""
    if name in TUNABLE_TRAIN:
        return name == "batch_size"
    return all(float(v).is_integer() for v in (entry.min, entry.max, entry.step or 1))


def check_search_entry(name: str, entry: Any) -> SearchRange | list[Any]:
    """One hyperparameter of a search space: a known name, a non-empty list or a valid range, values a train accepts."""
    if name not in TUNABLE_TRAIN and not re.fullmatch(re.escape(MODEL_PARAM_PREFIX) + r"[A-Za-z_]\w*", name):
        valid = [*TUNABLE_TRAIN, f"{MODEL_PARAM_PREFIX}<name>"]
        close = difflib.get_close_matches(name, [*TUNABLE_TRAIN, MODEL_PARAM_PREFIX], n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close and close[0] in TUNABLE_TRAIN else ""
        raise ValueError(f"unknown hyperparameter '{name}'; {hint}tunable: {', '.join(valid)}")
    if isinstance(entry, list):
        if not entry:
            raise ValueError(f"{name}: no choices; list at least one value, e.g. {name}: [a, b]")
        values = entry
    elif isinstance(entry, dict):
        try:
            entry = SearchRange.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(k) for k in first["loc"])
            raise ValueError(f"{name}{'.' + where if where else ''}: {first['msg'].removeprefix('Value error, ')}") from None
        values = [entry.min, entry.max]
    else:
        raise ValueError(f"{name}: give a range {{min: ..., max: ...}} or a list of choices, not {entry!r}")
    if name in TUNABLE_TRAIN:
        for candidate in values:  # each choice (or both bounds) must be a value train accepts
            try:
                TrainSpec.model_validate({name: candidate})
            except ValidationError as exc:
                raise ValueError(f"{name}: {candidate!r} is not a valid {name} ({exc.errors()[0]['msg']})") from None
    return entry


