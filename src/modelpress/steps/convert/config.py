from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.formats import CALIBRATED_FORMATS, CONVERT_FORMATS, of_family
from modelpress.ml.keras_artifact import KerasInputConfig
from modelpress.steps.convert.litert import PRESETS, parse_recipe

TENSORRT_FORMATS = of_family("tensorrt")
# A target option -> the formats it means something for; any other format rejects it (a typo never goes unnoticed).
OPTION_FORMATS: dict[str, tuple[str, ...]] = {
    "calibration_samples": CALIBRATED_FORMATS,
    "calibration_seed": CALIBRATED_FORMATS,
    "io_dtype": ("tflite_int8",),
    "recipe": ("tflite_litert",),
    "opset": ("onnx", *TENSORRT_FORMATS),
    "max_batch_size": TENSORRT_FORMATS,
    "workspace_mb": TENSORRT_FORMATS,
}


class ConvertConfig(KerasInputConfig):
    format: Literal[CONVERT_FORMATS] = Field(..., description="the target format (tflite_int8, openvino_fp32, onnx, ...)")
    on_unavailable: Literal["skip", "fail"] = Field("fail", description="when the target's GPU or runtime is absent")
    data: DataSpec = Field(..., description="the workflow's data: calibration samples and the agreement check batch")
    check_samples: int = Field(512, ge=16, description="test rows the converted model must agree on with its parent")
    calibration_samples: int = Field(256, ge=1, description="training rows INT8 ranges are calibrated on")
    calibration_seed: int = Field(0, description="seed choosing the calibration rows (hashed into the lineage)")
    io_dtype: Literal["float32", "int8", "uint8"] = Field(
        "float32", description="tflite_int8 input/output type: float32 (quantize inside) or integer-only I/O"
    )
    opset: int = Field(17, ge=13, le=18, description="ONNX opset tf2onnx writes")
    max_batch_size: int = Field(64, ge=1, description="largest batch the TensorRT engine's profile accepts")
    workspace_mb: int = Field(1024, ge=16, description="TensorRT builder workspace memory limit")
    recipe: str | list[dict[str, Any]] = Field(
        "int8_weights",
        description=f"tflite_litert: a preset ({', '.join(PRESETS)}) or rules {{layers, weights, activations, granularity}}",
    )

    @field_validator("recipe", mode="before")
    @classmethod
    def _valid_recipe(cls, value: Any) -> Any:
        parse_recipe(value)  # one line naming the rule and key that is wrong
        return value

    @model_validator(mode="before")
    @classmethod
    def _options_fit_format(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        target = data.get("format")
        for option, formats in OPTION_FORMATS.items():
            if option in data and target in CONVERT_FORMATS and target not in formats:
                raise ValueError(f"option '{option}' does not apply to {target}; it applies to {', '.join(formats)}")
        return data
