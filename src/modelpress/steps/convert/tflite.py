"""TFLite from the Keras model: FP32, FP16 weights, dynamic range, full integer INT8, and LiteRT recipes.

TensorFlow's converter writes the .tflite; LiteRT (`ai_edge_litert`, which replaces the deprecated tf.lite
interpreter) reads and runs it, here and in validate.

Converting the Keras model (not the SavedModel) is what lets QAT models become real INT8: the converter reads the
ranges their QuantizeWrapper layers learned. INT8 is integer-only (TFLITE_BUILTINS_INT8); a model the converter cannot
express that way fails the conversion instead of silently keeping float kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelpress.common.errors import StepFailed
from modelpress.common.tf import import_tf
from modelpress.ml.runtimes import interpreter
from modelpress.steps.convert.config import ConvertConfig

TFLITE_FILE = "model.tflite"
# Ops that may stay float in an INT8 model with float I/O: they convert at the model's edges.
EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


def build_converter(model, config: ConvertConfig, calibration: np.ndarray | None):
    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)  # as it is: tflite_fp32, and tflite_litert's float input
    if config.format == "tflite_fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif config.format == "tflite_dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif config.format == "tflite_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, config.io_dtype)
        converter.inference_output_type = getattr(tf, config.io_dtype)
    return converter


def op_dtypes(model_content: bytes) -> dict[str, list[str]]:
    """Each op name -> the sorted set of element types of its inputs and outputs."""
    reader = interpreter(model_content=model_content)
    tensors = {t["index"]: np.dtype(t["dtype"]).name for t in reader.get_tensor_details()}
    ops: dict[str, set[str]] = {}
    for op in reader._get_ops_details():  # the only API listing ops with their tensors
        indexes = [i for i in [*op["inputs"], *op["outputs"]] if i >= 0]
        ops.setdefault(op["op_name"], set()).update(tensors[i] for i in indexes)
    return {name: sorted(types) for name, types in sorted(ops.items())}


def float_kernels(dtypes: dict[str, list[str]]) -> list[str]:
    """Ops (from op_dtypes) computing in float32, except the quantize/dequantize at the edges."""
    return [name for name, types in dtypes.items() if "float32" in types and name not in EDGE_OPS]


def convert(model, config: ConvertConfig, calibration: np.ndarray | None, folder: Path) -> tuple[list[str], dict]:
    content = build_converter(model, config, calibration).convert()
    details: dict = {}
    if config.format == "tflite_litert":
        from modelpress.steps.convert import litert

        layers = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
        content, details = litert.quantize(content, config.recipe, calibration, layers, folder)
    details["op_dtypes"] = op_dtypes(content)
    if config.format == "tflite_int8":
        leftover = float_kernels(details["op_dtypes"])
        if leftover:
            raise StepFailed(f"tflite_int8 still computes {', '.join(leftover)} in float; the model needs ops TFLite can run in INT8")
        details["io_dtype"] = config.io_dtype
    (folder / TFLITE_FILE).write_bytes(content)
    return [TFLITE_FILE], details
