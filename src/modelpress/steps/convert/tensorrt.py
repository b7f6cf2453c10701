"""TensorRT engines from the ONNX export, built with the TensorRT builder API on the GPU that will serve them.

Precision lives in the ONNX graph and the network is strongly typed, the only mode TensorRT 11 has (10.x: from
10.12 by the STRONGLY_TYPED creation flag, which 11 accepts and ignores); no precision builder flag or calibrator,
which 11 removed, is used, so one code path builds on both majors.

- tensorrt_fp16: the ONNX with its float tensors converted to float16 (inputs and outputs stay float32), so the
  strongly typed network computes in FP16.
- tensorrt_int8: explicit quantization. The ONNX gets QuantizeLinear/DequantizeLinear pairs calibrated on the hashed
  calibration subset (onnxruntime's static quantizer, symmetric INT8 as TensorRT requires), so the scales are part of
  the graph, checkable on CPU with onnxruntime, and TensorRT needs no device-side calibrator.

Both ONNX graphs run in onnxruntime on CPU: everything up to the GPU boundary is tested without one.

An engine only runs on the GPU model and TensorRT version it was built with, so artifact.json carries an engine tag
(GPU name, compute capability, TensorRT and CUDA versions, and the node label of that GPU) and the runtime refuses an
engine whose tag does not match the node. The source ONNX is kept beside the engine to rebuild it for another pool.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from modelpress.common.errors import StepFailed, require
from modelpress.ml.tensorrt_engines import (  # noqa: F401 (the engine facts convert writes and tests read)
    BINDING_FIELDS,
    ENGINE_FILE,
    GPU_PRODUCT_LABEL,
    SOURCE_ONNX_FILE,
    Gpu,
    check_engine_tag,
    cuda_call,
    cuda_version,
    cudart,
    current_gpu,
    engine_tag,
    unavailable_reason,
)
from modelpress.steps.convert.config import ConvertConfig
from modelpress.steps.convert.onnx import export_onnx


def quantize_qdq(proto, calibration: np.ndarray):
    """The ONNX with symmetric INT8 Q/DQ pairs (per-channel weights), calibrated on the given rows."""
    onnx = require("onnx", "tensorrt")
    quantization = require("onnxruntime.quantization", "tensorrt")
    input_name = proto.graph.input[0].name

    class Rows(quantization.CalibrationDataReader):
        def __init__(self):
            self._rows = iter(calibration)

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {input_name: row[None]}

    with tempfile.TemporaryDirectory(prefix="modelpress-qdq-") as scratch:
        source, target = Path(scratch) / "float.onnx", Path(scratch) / "qdq.onnx"
        source.write_bytes(proto.SerializeToString())
        quantization.quantize_static(
            str(source),
            str(target),
            Rows(),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        return onnx.load(str(target))


def to_float16(proto):
    """The ONNX computing in float16 with float32 inputs and outputs (a Cast at each edge)."""
    float16 = require("onnxruntime.transformers.float16", "tensorrt")
    return float16.convert_float_to_float16(proto, keep_io_types=True)


def engine_onnx(model, config: ConvertConfig, calibration: np.ndarray | None):
    """The ONNX TensorRT builds from, its precision in its types: float16 for FP16 engines, Q/DQ INT8 for INT8 ones."""
    proto = export_onnx(model, config.opset)
    return quantize_qdq(proto, calibration) if config.format == "tensorrt_int8" else to_float16(proto)


def strongly_typed_network(trt, builder):
    """A network whose layers compute in the types of the graph's tensors: required on 10.x, the only kind on 11.x."""
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def configure_builder(trt, builder, network, config: ConvertConfig):
    """Workspace limit and a dynamic-batch optimization profile (1 .. max_batch_size); no precision flags: the
    network is strongly typed and its precision comes from the ONNX."""
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (1, *shape), (config.max_batch_size, *shape), (config.max_batch_size, *shape))
    builder_config.add_optimization_profile(profile)
    return builder_config


def build_engine(onnx_bytes: bytes, config: ConvertConfig) -> bytes:
    trt = require("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StepFailed(f"TensorRT cannot parse the ONNX export: {errors}")
    serialized = builder.build_serialized_network(network, configure_builder(trt, builder, network, config))
    if serialized is None:
        raise StepFailed(f"TensorRT could not build a {config.format} engine for this model (see the TensorRT log above)")
    return bytes(serialized)


def convert(model, config: ConvertConfig, calibration: np.ndarray | None, folder: Path) -> tuple[list[str], dict]:
    trt = require("tensorrt", "tensorrt")
    proto = engine_onnx(model, config, calibration)
    onnx_bytes = proto.SerializeToString()
    (folder / SOURCE_ONNX_FILE).write_bytes(onnx_bytes)
    (folder / ENGINE_FILE).write_bytes(build_engine(onnx_bytes, config))
    details = {
        "engine_tag": engine_tag(current_gpu(), trt.__version__),
        "opset": config.opset,
        "max_batch_size": config.max_batch_size,
        "source_onnx": SOURCE_ONNX_FILE,
    }
    return [ENGINE_FILE], details
