"""Target formats: what converting to a format and running it need, declared once.

`extras` are the pip extras that the format's convert and validate tasks need beyond their steps' own (convert
loads the Keras parent with TensorFlow; validate loads data and plots with it): the runtime that makes the format
and runs it. `gpu`: those tasks run on the GPU that will serve the format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TargetFormat:
    name: str
    extras: tuple[str, ...]
    gpu: bool = False


FORMATS: dict[str, TargetFormat] = {
    f.name: f
    for f in (
        TargetFormat("saved_model", ("tf",)),
        TargetFormat("tflite_fp32", ("tf",)),
        TargetFormat("tflite_fp16", ("tf",)),
        TargetFormat("tflite_dynamic", ("tf",)),
        TargetFormat("tflite_int8", ("tf",)),
        TargetFormat("tflite_litert", ("tf",)),  # ai-edge-quantizer recipe (components/quantize/litert.py)
        TargetFormat("openvino_fp32", ("tf", "openvino")),
        TargetFormat("openvino_fp16", ("tf", "openvino")),
        TargetFormat("openvino_int8", ("tf", "openvino")),
        TargetFormat("onnx", ("tf", "onnx")),
        TargetFormat("tensorrt_fp16", ("tf", "onnx", "tensorrt"), gpu=True),
        TargetFormat("tensorrt_int8", ("tf", "onnx", "tensorrt"), gpu=True),
    )
}
TARGET_FORMATS = tuple(FORMATS)
