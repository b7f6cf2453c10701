"""Target formats: every fact about a format, declared once in FORMATS; every consumer reads this table.

- `family`: the converter (steps/convert/<family>.py) that makes it and the runtime (ml/runtimes.RUNNERS) that runs
  it, here, in validate and in deploy;
- `extras`: the pip extras that the format's convert and validate tasks need beyond their steps' own (convert loads
  the Keras parent with TensorFlow; validate loads data and plots with it), from which contract/images.py picks the
  image;
- `calibrated`: converting needs the calibration subset of the training data (INT8 ranges, a LiteRT recipe's
  static activations);
- `keeps_float`: float arithmetic, so the converted model must reproduce its parent's predictions (convert checks);
  the quantized ones are judged by the workflow's gates in validate instead;
- `quantize_mode`: the post-training `quantize` mode that means "add this target" in a workflow's compress list;
- `gpu`: its convert and validate tasks run on the GPU that will serve it.
Adding a format: one row here, plus its family's converter and runner when the family is new.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TargetFormat:
    name: str
    family: str
    extras: tuple[str, ...]
    calibrated: bool = False
    keeps_float: bool = False
    quantize_mode: str | None = None
    gpu: bool = False


FORMATS: dict[str, TargetFormat] = {
    f.name: f
    for f in (
        TargetFormat("saved_model", "saved_model", ("tf",), keeps_float=True),
        TargetFormat("tflite_fp32", "tflite", ("tf",), keeps_float=True),
        TargetFormat("tflite_fp16", "tflite", ("tf",), keeps_float=True, quantize_mode="fp16"),
        TargetFormat("tflite_dynamic", "tflite", ("tf",), quantize_mode="dynamic"),
        TargetFormat("tflite_int8", "tflite", ("tf",), calibrated=True, quantize_mode="int8"),
        # ai-edge-quantizer recipe (steps/convert/litert.py)
        TargetFormat("tflite_litert", "tflite", ("tf",), calibrated=True, quantize_mode="litert"),
        TargetFormat("openvino_fp32", "openvino", ("tf", "openvino"), keeps_float=True),
        TargetFormat("openvino_fp16", "openvino", ("tf", "openvino"), keeps_float=True),
        TargetFormat("openvino_int8", "openvino", ("tf", "openvino"), calibrated=True),
        TargetFormat("onnx", "onnx", ("tf", "onnx"), keeps_float=True),
        TargetFormat("tensorrt_fp16", "tensorrt", ("tf", "onnx", "tensorrt"), keeps_float=True, gpu=True),
        TargetFormat("tensorrt_int8", "tensorrt", ("tf", "onnx", "tensorrt"), calibrated=True, gpu=True),
    )
}
TARGET_FORMATS = tuple(FORMATS)
# What the convert step makes (every Keras artifact already carries its SavedModel).
CONVERT_FORMATS = tuple(name for name, f in FORMATS.items() if f.family != "saved_model")
CALIBRATED_FORMATS = tuple(name for name, f in FORMATS.items() if f.calibrated)
FLOAT_FORMATS = tuple(name for name in CONVERT_FORMATS if FORMATS[name].keeps_float)
POST_TRAINING_TARGETS = {f.quantize_mode: name for name, f in FORMATS.items() if f.quantize_mode}


def of_family(family: str) -> tuple[str, ...]:
    return tuple(name for name, f in FORMATS.items() if f.family == family)
