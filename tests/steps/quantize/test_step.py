"""quantize: QAT and the collaborative modes keep zeros and clusters, a QAT artifact becomes an INT8 .tflite,
post-training modes become conversion targets, and every mistake is one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf, load_keras_model
from modelpress.contract.workflow import parse_workflow
from modelpress.execution.plan import build_plan
from modelpress.io.artifacts import read_meta
from modelpress.ml.keras_artifact import save_keras_artifact
from modelpress.ml.runtimes import interpreter
from modelpress.steps.cluster import step as cluster
from modelpress.steps.cluster.config import ClusterConfig
from modelpress.steps.convert import step as convert
from modelpress.steps.convert.config import ConvertConfig
from modelpress.steps.quantize import step as quantize
from modelpress.steps.quantize.config import QuantizeConfig
from tests.cli.test_main_bad_inputs import assert_one_line_error
from tests.conftest import TINY_WORKFLOW
from tests.steps.compress_parents import DATA, kernels, prune_with_tfmot, train_tiny

K = 8
# Parent -> the mode `auto` must pick for it.
AUTO_MODES = {"train": "qat", "pruned": "pqat", "clustered": "cqat", "pruned_clustered": "pcqat"}


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("quantize")
    uris = {"train": train_tiny(str(folder / "train"))}
    uris["pruned"] = prune_with_tfmot(uris["train"], str(folder / "pruned"))
    for source in ("train", "pruned"):
        name = "clustered" if source == "train" else "pruned_clustered"
        cluster.run(ClusterConfig(data=DATA, clusters=K, epochs=1), {"model": uris[source]}, str(folder / name))
        uris[name] = str(folder / name)
    return uris


@pytest.fixture(scope="module")
def quantized(parents) -> dict[str, str]:
    """Each parent through quantize with mode auto."""
    uris = {}
    for parent, uri in parents.items():
        uris[parent] = f"{uri}_quantized"
        quantize.run(QuantizeConfig(data=DATA, epochs=1), {"model": uri}, uris[parent])
    return uris


@pytest.mark.parametrize("parent", AUTO_MODES)
def test_auto_picks_the_mode_from_what_the_parent_is(parent, parents, quantized):
    meta = read_meta(quantized[parent])
    assert meta.details["mode"] == AUTO_MODES[parent] and meta.details["requested_mode"] == "auto"
    assert meta.step == "quantize" and meta.parent == parents[parent]
    assert 0.4 < meta.metrics["accuracy"] <= 1  # 3 training epochs of a 32-unit MLP: far from converged
    model = load_keras_model(Path(quantized[parent]) / "model.h5")
    wrapped = [layer.layer.name for layer in model.layers if type(layer).__name__ == "QuantizeWrapperV2"]
    assert {"dense_1", "logits"} <= set(wrapped)  # saved with its QAT wrappers (the INT8 ranges)
    assert set(meta.details["weights"]["layers"]) == {"dense_1", "logits"}  # stats read from the wrapped kernels


@pytest.mark.parametrize("parent", ["pruned", "pruned_clustered"])
def test_pqat_and_pcqat_keep_the_zeros(parent, parents, quantized):
    before, after = kernels(parents[parent]), kernels(quantized[parent])
    for name, kernel in before.items():
        zeros = kernel == 0
        assert zeros.mean() == pytest.approx(0.5, abs=0.01), name
        assert np.all(after[name][zeros] == 0), name
    assert read_meta(quantized[parent]).metrics["sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("parent", ["clustered", "pruned_clustered"])
def test_cqat_and_pcqat_keep_the_clusters(parent, quantized):
    for name, kernel in kernels(quantized[parent]).items():
        assert np.unique(kernel).size <= K, name
    assert all(layer["unique"] <= K for layer in read_meta(quantized[parent]).details["weights"]["layers"].values())


def test_plain_qat_moves_the_kernels(parents, quantized):
    """Fine-tuning happened: plain QAT neither keeps nor needs zeros or clusters."""
    before, after = kernels(parents["train"]), kernels(quantized["train"])
    assert not np.array_equal(before["dense_1"], after["dense_1"])
    assert np.unique(after["dense_1"]).size > K


@pytest.mark.parametrize("parent", ["train", "pruned_clustered"])
def test_a_qat_artifact_converts_to_a_tflite_int8_with_int8_kernels(parent, quantized, tmp_path):
    uri = str(tmp_path / "int8")
    result = convert.run(ConvertConfig(format="tflite_int8", data=DATA), {"model": quantized[parent]}, uri)
    assert result["metrics"]["check_agreement"] >= 0.95  # the ranges learned in QAT are the ones converted
    reader = interpreter(model_path=str(Path(uri) / "model.tflite"))
    tensors = {t["index"]: t for t in reader.get_tensor_details()}
    kernels_int8 = [
        np.dtype(tensors[op["inputs"][1]]["dtype"]).name for op in reader._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"
    ]
    assert kernels_int8 == ["int8", "int8"]
    assert read_meta(uri).parent == quantized[parent]


def test_a_mode_with_nothing_to_keep_is_refused(parents, tmp_path):
    with pytest.raises(UserError, match="quantize mode cqat keeps clusters, but no layer of the parent is clustered"):
        quantize.run(QuantizeConfig(data=DATA, mode="cqat"), {"model": parents["pruned"]}, str(tmp_path / "q"))
    with pytest.raises(UserError, match="quantize mode pqat keeps zero weights, but the parent has none"):
        quantize.run(QuantizeConfig(data=DATA, mode="pqat"), {"model": parents["clustered"]}, str(tmp_path / "q"))
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("step", ["quantize", "cluster"])
def test_a_quantization_aware_parent_is_refused(step, quantized, tmp_path):
    config = QuantizeConfig(data=DATA) if step == "quantize" else ClusterConfig(data=DATA)
    run = quantize.run if step == "quantize" else cluster.run
    with pytest.raises(UserError, match=f"{step} needs a float model but the parent is quantization-aware \\(quant_\\w+\\); quantize must be the last Keras step"):
        run(config, {"model": quantized["train"]}, str(tmp_path / "again"))
    assert not (tmp_path / "again").exists()


def test_a_post_training_mode_run_as_a_step_points_to_convert(tmp_path):
    with pytest.raises(UserError, match="run the convert step with format tflite_dynamic"):
        quantize.run(QuantizeConfig(data=DATA, mode="dynamic"), {"model": str(tmp_path / "any")}, str(tmp_path / "q"))


def test_an_unsupported_layer_is_named_with_its_type(cli, tmp_path):
    _, keras = import_tf()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(8, name="dense_1")(keras.layers.Flatten()(inputs))
    x = keras.layers.LayerNormalization(name="norm")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="logits")(x))
    parent = tmp_path / "parent"
    parent.mkdir()
    save_keras_artifact(model, parent, step="train", config=QuantizeConfig(data=DATA), parent=None, data_hash=None, metrics={})
    config = json.dumps({"data": DATA})
    result = cli("step", "quantize", "--config", config, "--input", f"model={parent}", "--output", str(tmp_path / "q"))
    assert_one_line_error(result, "layer 'norm' (LayerNormalization) is not supported by quantization-aware training")
    assert not (tmp_path / "q").exists()


def rescaled_model(keras, inputs):
    return keras.layers.Rescaling(2.0, name="rescale")(inputs)


def nested_model(keras, inputs):
    return keras.Model(inputs, keras.layers.Flatten()(inputs), name="backbone")(inputs)


@pytest.mark.parametrize("mode", ["qat", "pqat", "cqat", "pcqat"])
@pytest.mark.parametrize(
    ("build", "refusal"),
    [
        (rescaled_model, "layer 'rescale' (Rescaling) is not supported by quantization-aware training"),
        (nested_model, "layer 'backbone' (Functional) is a model inside the model, which tfmot's quantization-aware training cannot wrap"),
    ],
)
def test_qat_refusals_name_the_layer_in_every_scheme(build, refusal, mode):
    _, keras = import_tf()
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(build(keras, inputs))))
    with pytest.raises(UserError, match=f"^quantize: {re.escape(refusal)}"):
        quantize.quantization_aware(model, mode)


def test_an_unknown_mode_suggests_the_closest(cli, tmp_path):
    config = json.dumps({"data": DATA, "mode": "cqta"})
    result = cli("step", "quantize", "--config", config, "--input", "model=unused", "--output", str(tmp_path / "q"))
    assert_one_line_error(result, "unknown quantize mode 'cqta'", "did you mean 'cqat'?")


# ---------------------------------------------------------------------------------- post-training modes in the plan
def plan_of(compress: list[dict], targets: list | None = None):
    spec = {"name": "t", "model": {"zoo": "mlp"}, "data": DATA, "compress": compress}
    return build_plan(parse_workflow(spec if targets is None else {**spec, "targets": targets}))


@pytest.mark.parametrize("mode", ["dynamic", "int8", "fp16"])
def test_a_post_training_mode_becomes_the_tflite_target_of_the_final_model(mode):
    plan = plan_of([{"technique": "cluster"}, {"technique": "quantize", "mode": mode}])
    assert [t.step for t in plan if t.group != "validate"] == ["train", "cluster", "convert"]
    (conversion,) = [t for t in plan if t.step == "convert"]
    assert conversion.config.format == f"tflite_{mode}" and conversion.inputs == {"model": "cluster"}


def test_post_training_options_reach_the_conversion():
    plan = plan_of([{"technique": "quantize", "mode": "int8", "calibration_samples": 100, "calibration_seed": 3}])
    (conversion,) = [t for t in plan if t.step == "convert"]
    assert (conversion.config.calibration_samples, conversion.config.calibration_seed) == (100, 3)


@pytest.mark.parametrize(
    ("compress", "targets", "message"),
    [
        ([{"technique": "quantize", "mode": "int8"}, {"technique": "cluster"}], None, "compress[0]: quantize mode int8 is the tflite_int8 conversion of the final model; move it after cluster"),
        ([{"technique": "quantize", "mode": "int8", "calibration_samples": 9}], ["tflite_int8"], "tflite_int8 is also listed in targets; set its options (calibration_samples) there"),
        ([{"technique": "quantize", "mode": "fp16", "io_dtype": "int8"}], None, "compress[0] (quantize mode fp16): (top level): option 'io_dtype' does not apply to tflite_fp16"),
    ],
)
def test_post_training_mistakes(compress, targets, message):
    with pytest.raises(UserError) as error:
        plan_of(compress, targets)
    assert message in str(error.value)


# ------------------------------------------------------------------------------------------------------- end to end
def test_modelpress_run_clusters_then_quantizes_then_converts_to_int8(cli, tiny_workflow, tmp_path):
    """QAT (auto: cqat after cluster), then the int8 post-training entry: the plan converts the QAT model."""
    compress = (
        "compress:\n  - {technique: cluster, clusters: 8, epochs: 1}\n  - {technique: quantize, epochs: 1}\n"
        "  - {technique: quantize, mode: int8, calibration_samples: 64}\n"
    )
    tiny_workflow.write_text(TINY_WORKFLOW + compress)
    out = tmp_path / "run"
    result = cli("run", str(tiny_workflow), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [row["name"] for row in summary["artifacts"]] == ["train", "cluster", "quantize", "tflite_int8"]
    quantized = read_meta(str(out / "artifacts" / "quantize"))
    assert quantized.details["mode"] == "cqat" and quantized.parent == str(out / "artifacts" / "cluster")
    assert all(layer["unique"] <= 8 for layer in quantized.details["weights"]["layers"].values())
    int8 = read_meta(str(out / "artifacts" / "tflite_int8"))
    assert int8.parent == str(out / "artifacts" / "quantize") and "float32" not in int8.details["op_dtypes"]["FULLY_CONNECTED"]
    assert int8.details["calibration_rows"] == 64 and len(int8.calibration_hash) == 64  # the sample's sha256 in the lineage
    assert int8.metrics["size_bytes"] < quantized.metrics["size_bytes"]
