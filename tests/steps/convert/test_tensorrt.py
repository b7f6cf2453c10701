"""TensorRT targets: everything up to the GPU boundary runs here (the ONNX the builder consumes, checked with
onnxruntime; the engine tag), the no-GPU behaviour for skip and fail, and the real build where a GPU is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import load_keras_model
from modelpress.contract.compression import Gates
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.workflow import parse_workflow
from modelpress.execution.runner import run_workflow
from modelpress.io.data import calibration_subset, load_dataset
from modelpress.steps.convert import step as convert
from modelpress.steps.convert import tensorrt
from modelpress.steps.convert.config import ConvertConfig

DATA = {"source": "digits"}
NO_GPU = tensorrt.unavailable_reason()
needs_no_gpu = pytest.mark.skipif(NO_GPU is None, reason="this node has a GPU and TensorRT: the no-GPU path cannot happen")
needs_gpu = pytest.mark.skipif(NO_GPU is not None, reason=f"TensorRT engines need a GPU: {NO_GPU}")


def config(target: str, **options) -> ConvertConfig:
    return ConvertConfig(format=target, data=DATA, **options)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A whole local run whose targets include both TensorRT formats with on_unavailable: skip."""
    workflow = parse_workflow(
        {
            "name": "trt",
            "model": {"zoo": "small_cnn", "params": {"filters": [4], "dense": 16}},
            "data": DATA,
            "train": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01},
            "targets": [
                "onnx",
                {"format": "tensorrt_fp16", "on_unavailable": "skip"},
                {"format": "tensorrt_int8", "on_unavailable": "skip", "options": {"calibration_samples": 128}},
            ],
            "evaluation": {"latency_runs": 5, "warmup_runs": 1},
        }
    )
    out = tmp_path_factory.mktemp("trt") / "run"
    run_workflow(workflow, str(out))
    return out


@pytest.fixture(scope="module")
def model(run):
    return load_keras_model(run / "artifacts" / "train" / "model.h5")


@needs_no_gpu
def test_run_without_gpu_skips_both_engines_and_their_validation(run):
    summary = json.loads((run / "summary.json").read_text())
    skipped = {entry["task"]: entry["reason"] for entry in summary["skipped"]}
    for target in ("tensorrt_fp16", "tensorrt_int8"):
        assert skipped[f"convert_{target}"].startswith(f"{target} needs an NVIDIA GPU with TensorRT: ")
        assert skipped[f"validate_convert_{target}"] == "its input 'model' was skipped"
        # No artifact, only the skip marker the tasks reading it see (in any orchestrator)
        assert [p.name for p in (run / "artifacts" / target).iterdir()] == ["skipped.json"]
    assert [(a["name"], a["format"]) for a in summary["artifacts"]] == [("train", "saved_model"), ("onnx", "onnx")]


@needs_no_gpu
def test_skip_returns_skipped_and_writes_nothing(run, tmp_path):
    result = convert.run(config("tensorrt_fp16", on_unavailable="skip"), {"model": str(run / "artifacts" / "train")}, str(tmp_path / "e"))
    assert result == {"skipped": True, "reason": f"tensorrt_fp16 needs an NVIDIA GPU with TensorRT: {NO_GPU}"}
    assert list(tmp_path.iterdir()) == []


@needs_no_gpu
def test_fail_exits_non_zero_with_one_line(cli, run, tmp_path):
    output = tmp_path / "engine"
    result = cli(
        "step", "convert", "--config", json.dumps({"format": "tensorrt_int8", "data": DATA}),
        "--input", f"model={run / 'artifacts' / 'train'}", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"modelpress: error: tensorrt_int8 needs an NVIDIA GPU with TensorRT: {NO_GPU}; "
        "run it on the GPU node pool or set on_unavailable: skip for this target"
    )
    assert not output.exists()


def predictions(proto, rows: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: rows})[0]


def test_fp16_engine_onnx_computes_in_float16_with_float32_io_and_matches_the_keras_model(model):
    from onnx import TensorProto

    data = load_dataset(DigitsData(source="digits"))
    proto = tensorrt.engine_onnx(model, config("tensorrt_fp16"), None)
    io_types = [t.type.tensor_type.elem_type for t in [*proto.graph.input, *proto.graph.output]]
    assert io_types == [TensorProto.FLOAT, TensorProto.FLOAT]  # callers pass and get float32
    weight_types = {i.data_type for i in proto.graph.initializer if len(i.dims) >= 2}
    assert weight_types == {TensorProto.FLOAT16}  # the precision a strongly typed network builds with
    reference = model.predict(data.x_test, verbose=0)
    batched = predictions(proto, data.x_test)
    single = np.concatenate([predictions(proto, data.x_test[i : i + 1]) for i in range(16)])
    assert np.mean(batched.argmax(1) == reference.argmax(1)) >= 0.99
    np.testing.assert_allclose(batched, reference, atol=1e-2)  # float16 rounding, nothing more
    np.testing.assert_allclose(single, batched[:16], atol=1e-3)


def test_int8_engine_onnx_is_symmetric_qdq_calibrated_on_the_recorded_subset_and_meets_the_gates(model):
    from onnx import numpy_helper

    from modelpress.steps.validate.step import apply_gates

    data = load_dataset(DigitsData(source="digits"))
    settings = config("tensorrt_int8", calibration_samples=128)
    calibration, _ = calibration_subset(data, settings.calibration_samples, settings.calibration_seed)  # what convert records
    proto = tensorrt.engine_onnx(model, settings, calibration)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3
    initializers = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # TensorRT needs symmetric INT8
    assert any(v.dtype == np.int8 and v.ndim == 4 for v in initializers.values())  # conv weights stored as INT8
    keras_accuracy = float(np.mean(model.predict(data.x_test, verbose=0).argmax(1) == data.y_test))
    qdq_accuracy = float(np.mean(predictions(proto, data.x_test).argmax(1) == data.y_test))
    checks = apply_gates(Gates(max_drop=0.02), {"accuracy": qdq_accuracy}, {"name": "train", "accuracy": keras_accuracy})
    assert [(c["gate"], c["passed"]) for c in checks] == [("max_drop", True)], checks
    assert keras_accuracy > 0.8  # a trained model, so the gate compares something


def test_engine_tag_binds_gpu_tensorrt_and_cuda_versions():
    t4 = tensorrt.Gpu(name="Tesla T4", compute_capability="7.5", cuda_runtime_version="12.9", cuda_driver_version="12.4")
    tag = tensorrt.engine_tag(t4, "10.3.0")
    assert tag == {
        "gpu_name": "Tesla T4",
        "compute_capability": "7.5",
        "tensorrt_version": "10.3.0",
        "cuda_runtime_version": "12.9",
        "cuda_driver_version": "12.4",
        "node_selector": {"nvidia.com/gpu.product": "Tesla-T4"},
    }
    tensorrt.check_engine_tag(tag, t4, "10.3.0")
    a10 = tensorrt.Gpu(name="NVIDIA A10", compute_capability="8.6", cuda_runtime_version="12.9", cuda_driver_version="12.4")
    with pytest.raises(UserError, match=r"built for another node \(gpu_name 'Tesla T4' != 'NVIDIA A10'; compute_capability '7.5' != '8.6'\)") as caught:
        tensorrt.check_engine_tag(tag, a10, "10.3.0")
    assert "Tesla-T4" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UserError, match=r"tensorrt_version '10.3.0' != '10.8.0'"):
        tensorrt.check_engine_tag(tag, t4, "10.8.0")
    assert tensorrt.cuda_version(12090) == "12.9" and tensorrt.cuda_version(11080) == "11.8"


def test_no_gpu_reason_names_the_missing_part():
    if NO_GPU is None:
        pytest.skip("this node has a GPU and TensorRT")
    assert NO_GPU.startswith("no CUDA GPU on this node (") or "pip install 'modelpress[tensorrt]'" in NO_GPU


@needs_gpu
@pytest.mark.parametrize("target", ["tensorrt_fp16", "tensorrt_int8"])
def test_builder_configuration_on_a_real_gpu(target, model):
    trt = pytest.importorskip("tensorrt")
    settings = config(target, max_batch_size=32, workspace_mb=256)
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = tensorrt.strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING))
    calibration, _ = calibration_subset(load_dataset(DigitsData(source="digits")), 64, 0)
    assert parser.parse(tensorrt.engine_onnx(model, settings, calibration).SerializeToString())
    builder_config = tensorrt.configure_builder(trt, builder, network, settings)
    assert builder_config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 256 << 20
    assert builder_config.num_optimization_profiles == 1
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        builder.build_serialized_network(network, builder_config)
    )
    name = engine.get_tensor_name(0)
    assert [tuple(s) for s in engine.get_tensor_profile_shape(name, 0)] == [(1, 8, 8, 1), (32, 8, 8, 1), (32, 8, 8, 1)]


@needs_gpu
@pytest.mark.parametrize("target", ["tensorrt_fp16", "tensorrt_int8"])
def test_engine_build_and_check_on_a_real_gpu(target, run, tmp_path):
    from modelpress.io.artifacts import read_meta

    trt = pytest.importorskip("tensorrt")
    result = convert.run(config(target), {"model": str(run / "artifacts" / "train")}, str(tmp_path / target))
    meta = read_meta(str(tmp_path / target))
    assert meta.model_path == "model.engine" and (tmp_path / target / "model.onnx").is_file()
    assert meta.details["engine_tag"] == tensorrt.engine_tag(tensorrt.current_gpu(), trt.__version__)
    assert result["metrics"]["check_agreement"] >= (0.99 if target == "tensorrt_fp16" else 0.9)


def test_the_builder_uses_no_api_tensorrt_11_removed():
    """TensorRT 11 cannot be installed without a GPU index here, so the removed weak-typing API is checked in the
    source: any of these names would fail on 11.x at its first call."""
    source = Path(tensorrt.__file__).read_text()
    removed = ["BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8", "int8_calibrator", "platform_has_fast", "set_quantization_flag"]
    assert [name for name in removed if name in source] == []
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in source
