"""convert: one tiny CNN trained once, converted to every CPU format, each output checked in its own runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.tf import import_tf, load_keras_model
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.formats import CALIBRATED_FORMATS, CONVERT_FORMATS, FLOAT_FORMATS
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.contract.workflow import parse_workflow
from modelpress.io.artifacts import ArtifactMeta, finish, read_meta
from modelpress.io.data import calibration_subset, load_dataset
from modelpress.ml.keras_artifact import save_keras_artifact
from modelpress.ml.runtimes import interpreter
from modelpress.steps.convert import step as convert
from modelpress.steps.convert import tensorrt
from modelpress.steps.convert.config import ConvertConfig
from modelpress.steps.convert.tflite import float_kernels, op_dtypes
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.validate import step as validate
from modelpress.steps.validate.config import ValidateConfig

DATA = {"source": "digits"}
CPU_FORMATS = [f for f in CONVERT_FORMATS if not f.startswith("tensorrt")]
MODEL_SUFFIX = {"tflite": ".tflite", "openvino": ".xml", "onnx": ".onnx"}
RUNTIME = {"tflite": "litert", "openvino": "openvino", "onnx": "onnxruntime"}
# Names that only training-time parts carry: optimizer slots, pruning masks/thresholds, clustering centroids/indices.
TRAINING_NAMES = ("optimizer", "adam", "prune", "pruning", "mask", "threshold", "cluster", "centroid", "pulling_indices")


def config(target: str, **options) -> ConvertConfig:
    return ConvertConfig(format=target, data=DATA, **options)


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("convert") / "train")
    train.run(
        TrainConfig(
            model=ModelSpec(zoo="small_cnn", params={"filters": [4], "dense": 16}),
            data=DATA,
            train=TrainSpec(epochs=3, batch_size=32, learning_rate=0.01),
        ),
        {},
        uri,
    )
    return uri


@pytest.fixture(scope="module")
def converted(parent) -> dict[str, str]:
    out = Path(parent).parent
    return {target: convert.run(config(target), {"model": parent}, str(out / target))["uri"] for target in CPU_FORMATS}


@pytest.fixture(scope="module")
def parent_validation(parent) -> str:
    uri = str(Path(parent).parent / "validate_train")
    validate.run(ValidateConfig(name="train", data=DATA, evaluation={"latency_runs": 5, "warmup_runs": 1}), {"model": parent}, uri)
    return uri


@pytest.fixture(scope="module")
def data():
    return load_dataset(DigitsData(source="digits"))


def keras_model(artifact: str):
    return load_keras_model(Path(artifact) / "model.h5")


def family(target: str) -> str:
    return target.split("_")[0]


# ------------------------------------------------------------------------------------------------ every format
@pytest.mark.parametrize("target", CPU_FORMATS)
def test_artifact_names_its_target_model_file_and_lineage(target, converted, parent, data):
    meta = read_meta(converted[target])
    folder = Path(converted[target])
    assert meta.format == target and meta.step == "convert" and meta.parent == parent
    assert meta.model_path.endswith(MODEL_SUFFIX[family(target)])
    assert meta.data_hash == read_meta(parent).data_hash
    assert meta.metrics["params"] == read_meta(parent).metrics["params"]
    model_files = [folder / name for name in meta.details["model_files"]]
    assert meta.metrics["size_bytes"] == sum(f.stat().st_size for f in model_files)
    if family(target) == "openvino":  # the IR is the .xml plus its weights: the size counts both
        assert [f.name for f in model_files] == ["model.xml", "model.bin"]
    if target in CALIBRATED_FORMATS:
        assert meta.calibration_hash == calibration_subset(data, 256, 0)[1]
        assert meta.details["calibration_rows"] == 256
    else:
        assert meta.calibration_hash is None
    assert set(meta.files) >= {m.name for m in model_files}


@pytest.mark.parametrize("target", CPU_FORMATS)
def test_each_artifact_validates_in_its_own_runtime(target, converted, parent_validation, tmp_path):
    result = validate.run(
        ValidateConfig(name=target, data=DATA, gates={"min_agreement": 0.5}, evaluation={"latency_runs": 5, "warmup_runs": 1}),
        {"model": converted[target], "parent": parent_validation, "baseline": parent_validation},
        str(tmp_path / "validation"),
    )
    blessing = json.loads((tmp_path / "validation" / "blessing.json").read_text())
    assert blessing["format"] == target and blessing["runtime"] == RUNTIME[family(target)]
    parent_accuracy = json.loads((Path(parent_validation) / "blessing.json").read_text())["metrics"]["accuracy"]
    assert parent_accuracy > 0.8, "the fixture model must be trained well enough for agreement to mean something"
    metrics = result["metrics"]
    if target in FLOAT_FORMATS:
        assert metrics["agreement"] >= 0.99 and abs(metrics["accuracy"] - parent_accuracy) <= 0.01
    else:  # quantized: judged by the gates; on this model they stay close
        assert metrics["agreement"] >= 0.9 and metrics["accuracy"] >= parent_accuracy - 0.05
    assert metrics["size_bytes"] == read_meta(converted[target]).metrics["size_bytes"]
    assert metrics["threads"] == 1  # EvaluationSpec's default


def os_threads() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


def test_every_cpu_runtime_computes_with_the_configured_thread_count(converted):
    from modelpress.ml.runtimes import load_runner

    def runner(target: str, threads: int):
        return load_runner(Path(converted[target]), read_meta(converted[target]), threads)

    assert runner("onnx", 3)._session.get_session_options().intra_op_num_threads == 3
    # OpenVINO caps the count at the cores it sees (2 on small nodes): 1 is below its default everywhere.
    assert runner("openvino_fp32", 1).request((1, 8, 8, 1)).get_compiled_model().get_property("INFERENCE_NUM_THREADS") == 1
    before = os_threads()
    tflite = runner("tflite_fp32", 3)
    tflite.predict(np.zeros((1, 8, 8, 1), np.float32))
    assert os_threads() - before == 2  # the interpreter's pool: two workers beside the calling thread
    # This process trained the parent: TensorFlow's pools are sized and cannot change here.
    assert runner("tflite_fp32", 1).threads == 1 and load_runner(*parent_saved_model(converted), 1).threads is None


def parent_saved_model(converted) -> tuple[Path, object]:
    parent = read_meta(converted["onnx"]).parent
    return Path(parent), read_meta(parent)


def test_saved_model_is_timed_with_the_configured_threads_even_after_training_in_process(parent_validation):
    blessing = json.loads((Path(parent_validation) / "blessing.json").read_text())
    evaluation = json.loads((Path(parent_validation) / "evaluation.json").read_text())
    assert blessing["runtime"] == "tensorflow" and blessing["metrics"]["threads"] == 1
    assert {k: evaluation[k] for k in ("runtime", "threads", "warmup_runs", "latency_runs")} == {
        "runtime": "tensorflow", "threads": 1, "warmup_runs": 1, "latency_runs": 5,
    }  # fmt: skip
    assert len(evaluation["latency_ms_samples"]) == 5 and blessing["metrics"]["throughput_per_s"] > 0


def test_a_dead_tensorflow_worker_fails_one_measurement_and_the_next_gets_a_new_one(parent, parent_validation, data):
    from modelpress.contract.compression import EvaluationSpec

    evaluation = EvaluationSpec(latency_runs=5, warmup_runs=1)
    for process in list(validate._TF_WORKERS[1]._processes.values()):  # the worker parent_validation started
        process.kill()
        process.join()
    with pytest.raises(StepFailed, match=r"^the process measuring saved_model in TensorFlow died \(.*\); see its log above$"):
        validate.measure_in_tf_worker(Path(parent), read_meta(parent), data, evaluation)
    again = validate.measure_in_tf_worker(Path(parent), read_meta(parent), data, evaluation)
    assert again.runtime == "tensorflow" and again.threads == 1 and len(again.latencies) == 5


def test_quantized_formats_are_smaller_than_fp32(converted):
    size = {t: read_meta(converted[t]).metrics["size_bytes"] for t in CPU_FORMATS}
    assert size["tflite_fp16"] < size["tflite_fp32"] and size["tflite_dynamic"] < size["tflite_fp16"]
    assert size["tflite_int8"] < size["tflite_fp32"]
    weights = {t: (Path(converted[t]) / "model.bin").stat().st_size for t in ("openvino_fp32", "openvino_fp16", "openvino_int8")}
    assert weights["openvino_fp16"] < weights["openvino_fp32"] and weights["openvino_int8"] < weights["openvino_fp32"]


def test_tflite_int8_is_integer_only_with_float_io_by_default(converted):
    content = (Path(converted["tflite_int8"]) / "model.tflite").read_bytes()
    dtypes = op_dtypes(content)
    assert float_kernels(dtypes) == []
    assert "int8" in dtypes["CONV_2D"] and "int8" in dtypes["FULLY_CONNECTED"]
    reader = interpreter(model_content=content)
    assert reader.get_input_details()[0]["dtype"] == np.float32


def test_tflite_int8_with_integer_io(parent, tmp_path, data):
    result = convert.run(config("tflite_int8", io_dtype="int8"), {"model": parent}, str(tmp_path / "int8_io"))
    reader = interpreter(model_path=str(tmp_path / "int8_io" / "model.tflite"))
    assert reader.get_input_details()[0]["dtype"] == np.int8 and reader.get_output_details()[0]["dtype"] == np.int8
    # The runner quantizes float rows with the model's own scale: predictions still match the parent.
    assert result["metrics"]["check_agreement"] >= 0.9


def test_openvino_int8_holds_fake_quantize_ops(converted):
    ov = pytest.importorskip("openvino")
    ops = [op.get_type_name() for op in ov.Core().read_model(Path(converted["openvino_int8"]) / "model.xml").get_ops()]
    assert ops.count("FakeQuantize") >= 3
    assert "FakeQuantize" not in read_meta(converted["openvino_fp32"]).details["ops"]


def test_onnx_opset_is_configurable(parent, tmp_path):
    onnx = pytest.importorskip("onnx")
    convert.run(config("onnx", opset=13), {"model": parent}, str(tmp_path / "onnx13"))
    proto = onnx.load(str(tmp_path / "onnx13" / "model.onnx"))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {13}


# ------------------------------------------------------------------------------------------ training-only parts
def wrapped_artifact(parent: str, folder: Path, wrapper: str) -> str:
    """The parent wrapped for pruning or clustering, fine-tuned one epoch and saved WITH its optimizer state."""
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    data = load_dataset(DigitsData(source="digits"))
    model = keras_model(parent)
    callbacks = []
    if wrapper == "pruning":
        schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
        scope = tfmot.sparsity.keras.prune_scope
    else:
        model = tfmot.clustering.keras.cluster_weights(
            model, number_of_clusters=4, cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.LINEAR
        )
        scope = tfmot.clustering.keras.cluster_scope
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=64, callbacks=callbacks, verbose=0)
    folder.mkdir()
    with scope():
        model.save(folder / "model.h5", include_optimizer=True)
    finish(folder, ArtifactMeta(format="saved_model", step=wrapper, model_path="model.h5", config_hash="test"))
    return str(folder)


def graph_names(target: str, artifact: Path) -> list[str]:
    """Every tensor, node, initializer or op name in a converted model."""
    if family(target) == "tflite":
        return [t["name"] for t in interpreter(model_path=str(artifact / "model.tflite")).get_tensor_details()]
    if family(target) == "onnx":
        import onnx

        return onnx_names(onnx.load(str(artifact / "model.onnx")).graph)
    import openvino as ov

    return [op.get_friendly_name() for op in ov.Core().read_model(artifact / "model.xml").get_ops()]


def onnx_names(graph) -> list[str]:
    return [n.name for n in graph.node] + [i.name for i in graph.initializer] + [o for n in graph.node for o in n.output]


def training_names(names: list[str]) -> list[str]:
    return [n for n in names if any(word in n.lower() for word in TRAINING_NAMES)]


@pytest.mark.parametrize("wrapper", ["pruning", "clustering"])
def test_training_only_parts_are_stripped_in_every_family(wrapper, parent, tmp_path):
    import h5py

    source = wrapped_artifact(parent, tmp_path / f"{wrapper}_model", wrapper)
    with h5py.File(Path(source) / "model.h5") as saved:  # the input really carries what must be stripped
        assert "optimizer_weights" in saved
        layer_names = json.dumps(json.loads(saved.attrs["model_config"]))
        assert ("PruneLowMagnitude" if wrapper == "pruning" else "ClusterWeights") in layer_names
    for target in ("tflite_fp32", "onnx", "openvino_fp32"):
        out = tmp_path / target
        result = convert.run(config(target), {"model": source}, str(out))
        assert read_meta(str(out)).details["stripped_wrappers"] == [wrapper]
        assert result["metrics"]["check_agreement"] >= 0.99
        leftovers = training_names(graph_names(target, out))
        assert leftovers == [], f"{target} keeps training-only parts: {leftovers[:5]}"
    # TensorRT builds its engine from the ONNX of the same stripped model (the build itself needs a GPU).
    model, stripped = convert.strip_training_wrappers(load_keras_model(Path(source) / "model.h5"))
    assert stripped == [wrapper] and training_names(onnx_names(tensorrt.engine_onnx(model, config("tensorrt_fp16"), None).graph)) == []


def test_qat_model_converts_to_real_int8(parent, tmp_path):
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    data = load_dataset(DigitsData(source="digits"))
    qat = tfmot.quantization.keras.quantize_model(keras_model(parent))
    qat.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    qat.fit(data.x_train, data.y_train, epochs=1, batch_size=64, verbose=0)
    folder = tmp_path / "quantize"
    folder.mkdir()
    save_keras_artifact(qat, folder, step="quantize", config=config("tflite_int8"), parent=parent, data_hash=data.hash, metrics={})
    result = convert.run(config("tflite_int8"), {"model": str(folder)}, str(tmp_path / "qat_int8"))
    dtypes = op_dtypes((tmp_path / "qat_int8" / "model.tflite").read_bytes())
    assert float_kernels(dtypes) == [] and "int8" in dtypes["CONV_2D"]
    weights = [t for t in interpreter(model_path=str(tmp_path / "qat_int8" / "model.tflite")).get_tensor_details()
               if len(t["shape"]) == 4 and t["shape"][0] == 4]  # the conv kernel: 4 filters
    assert weights and all(t["dtype"] == np.int8 for t in weights)
    assert result["metrics"]["check_agreement"] >= 0.9


# ------------------------------------------------------------------------------------------------- bad inputs
def test_wrong_shape_calibration_data_fails_in_one_line_and_writes_nothing(cli, parent, tmp_path):
    output = tmp_path / "broken"
    bad = {"format": "tflite_int8", "data": {"source": "digits", "resize": [16, 16]}}
    result = cli("step", "convert", "--config", json.dumps(bad), "--input", f"model={parent}", "--output", str(output))
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("modelpress: error: the data gives inputs of shape (16, 16, 1) but the model takes (8, 8, 1)")
    assert not output.exists() and not list(tmp_path.glob(".broken*"))


@pytest.mark.parametrize("target", ["tflite_int8", "openvino_int8"])
def test_converter_failure_on_wrong_shape_representative_data_is_one_line(target, parent, tmp_path):
    model = keras_model(parent)
    wrong = np.zeros((8, 16, 16, 1), dtype=np.float32)
    with pytest.raises(StepFailed, match=f"^{target} conversion failed: .*16") as caught:
        convert.convert_model(model, config(target), wrong, tmp_path)
    assert "\n" not in str(caught.value) and "8" in str(caught.value)


def test_float_conversion_that_disagrees_with_parent_fails(parent, data):
    _, keras = import_tf()
    trained = keras_model(parent).predict(data.x_test, verbose=0)
    untrained = keras.models.clone_model(keras_model(parent)).predict(data.x_test, verbose=0)
    with pytest.raises(StepFailed, match=r"^tflite_fp32 agrees with its parent on 0\.\d+ of 359 test rows, below 0.99"):
        convert.judge_agreement("tflite_fp32", untrained, trained)
    assert convert.judge_agreement("tflite_int8", untrained, trained) < 0.5  # INT8 is left to the gates


def test_input_must_be_a_keras_artifact(converted, tmp_path):
    with pytest.raises(UserError, match=r"convert reads a Keras model artifact \(with model.h5\); .* is a tflite_fp32 artifact"):
        convert.run(config("onnx"), {"model": converted["tflite_fp32"]}, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_existing_output_is_not_overwritten(converted, parent):
    before = (Path(converted["onnx"]) / "artifact.json").read_text()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        convert.run(config("onnx"), {"model": parent}, converted["onnx"])
    assert (Path(converted["onnx"]) / "artifact.json").read_text() == before


def test_option_for_another_format_is_rejected_naming_the_target():
    from modelpress.execution.plan import build_plan

    workflow = parse_workflow(
        {
            "name": "w",
            "model": {"zoo": "mlp"},
            "data": DATA,
            "targets": [{"format": "tflite_fp32", "options": {"opset": 13}}],
        }
    )
    with pytest.raises(UserError, match=r"targets \(tflite_fp32\).*option 'opset' does not apply to tflite_fp32; it applies to onnx"):
        build_plan(workflow)


def test_misspelled_option_gets_the_closest_key():
    with pytest.raises(ValueError, match="did you mean 'calibration_samples'"):
        ConvertConfig(format="tflite_int8", data=DATA, calibration_sample=10)


def test_example_workflow_plans_a_conversion_per_cpu_target(cli):
    result = cli("check", "examples/digits_cnn.yaml")
    assert result.returncode == 0, result.stderr
    for target in CPU_FORMATS:
        if target != "openvino_fp16":
            assert f"convert_{target} " in result.stdout
            assert f"validate_convert_{target} " in result.stdout

