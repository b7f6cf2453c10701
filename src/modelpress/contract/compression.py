"""The compress, targets, gates and evaluation sections: what is done to the model and what it must meet."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelpress.contract.formats import TARGET_FORMATS  # the spec accepts exactly the formats formats.py declares
from modelpress.contract.schema import StrictModel

COMPRESSION_TECHNIQUES = ("prune", "cluster", "quantize", "distill")


class TechniqueSpec(BaseModel):
    """One compression step; its parameters are checked by that step's own config model."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    technique: str
    # `from` is a Python keyword, hence the alias. Default: the previous entry (or train), which makes a chain.
    source: str | None = Field(
        None,
        alias="from",
        description="the artifact this technique starts from: train or an earlier entry's name; default the previous entry",
    )

    @field_validator("technique")
    @classmethod
    def _known_technique(cls, value: str) -> str:
        if value not in COMPRESSION_TECHNIQUES:
            close = difflib.get_close_matches(value, COMPRESSION_TECHNIQUES, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(COMPRESSION_TECHNIQUES)}"
            raise ValueError(f"unknown technique '{value}'; {hint}")
        return value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})




class TargetSpec(StrictModel):
    format: str = Field(..., description="one of the target formats (saved_model, tflite_int8, onnx, ...)")
    on_unavailable: Literal["skip", "fail"] = Field("fail", description="what to do when the target's hardware is absent")
    options: dict[str, Any] = Field(default_factory=dict, description="format options, e.g. opset, int8 I/O")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"format": data} if isinstance(data, str) else data

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in TARGET_FORMATS:
            close = difflib.get_close_matches(value, TARGET_FORMATS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(TARGET_FORMATS)}"
            raise ValueError(f"unknown target format '{value}'; {hint}")
        return value


# ---------------------------------------------------------------------------------------------------------- gates
class Gates(StrictModel):
    """Accuracy values are fractions (0.95 = 95%); drops are fractions too (0.01 = 1 percentage point)."""

    min_accuracy: float | None = Field(None, ge=0, le=1, description="lowest test accuracy allowed")
    max_drop: float | None = Field(None, ge=0, le=1, description="accuracy drop allowed vs the trained (uncompressed) model")
    max_class_drop: float | None = Field(None, ge=0, le=1, description="largest drop allowed on any single class")
    min_agreement: float | None = Field(None, ge=0, le=1, description="share of test predictions equal to the parent's")
    max_size_bytes: int | None = Field(None, gt=0, description="size of the model files, uncompressed")
    max_latency_ms: float | None = Field(None, gt=0, description="batch-1 p95 latency")
    max_drop_vs_serving: float | None = Field(
        None, ge=0, le=1, description="accuracy drop allowed vs the currently published model (needs a push section)"
    )


class EvaluationSpec(StrictModel):
    latency_runs: int = Field(100, ge=5, description="timed batch-1 runs (after warm-up) for p50/p95")
    warmup_runs: int = Field(10, ge=0, description="untimed batch-1 runs before timing")
    batch_size: int = Field(256, ge=1, description="batch size for accuracy and throughput")
    threads: int = Field(
        1,
        ge=1,
        description="CPU threads every runtime computes with (TF intra/inter-op, TFLite, OpenVINO, onnxruntime), so "
        "latencies compare across runtimes and nodes; 1 = single-core, the edge-device case",
    )
    sensitivity_rows: int = Field(
        512,
        ge=0,
        description="when a gate fails: validation rows (test rows without a validation split) the per-layer "
        "sensitivity is measured on; 0 turns it off",
    )
    sensitivity_layers: int = Field(
        32, ge=1, description="when a gate fails: most layers measured one by one, the largest by parameters first"
    )


