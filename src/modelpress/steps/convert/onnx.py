"""ONNX through tf2onnx at a configurable opset, checked by the ONNX checker; onnxruntime runs it in the check."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from modelpress.common.errors import require
from modelpress.common.tf import import_tf
from modelpress.steps.convert.config import ConvertConfig

ONNX_FILE = "model.onnx"


def export_onnx(model, opset: int):
    """The inference graph of a Keras model as an ONNX ModelProto with a dynamic batch dimension."""
    tf, _ = import_tf()
    tf2onnx = require("tf2onnx", "onnx")
    onnx = require("onnx", "onnx")
    signature = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def op_counts(proto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))


def convert(model, config: ConvertConfig, calibration, folder: Path) -> tuple[list[str], dict]:
    proto = export_onnx(model, config.opset)
    (folder / ONNX_FILE).write_bytes(proto.SerializeToString())
    return [ONNX_FILE], {"opset": config.opset, "ops": op_counts(proto)}
