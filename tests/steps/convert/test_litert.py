"""tflite_litert: ai-edge-quantizer recipes on a tiny CNN trained once; the artifacts run in LiteRT in validate, a bad
recipe is one line and exit 2, and a gate failure shows the per-layer error report in the run report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io.artifacts import read_meta
from modelpress.io.report import artifact_rows, write_report
from modelpress.steps.convert import step as convert
from modelpress.steps.convert.config import ConvertConfig
from modelpress.steps.convert.litert import LAYER_ERRORS_FILE, parse_recipe
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.validate import step as validate
from modelpress.steps.validate.config import ValidateConfig

DATA = {"source": "digits"}
EVALUATION = {"latency_runs": 5, "warmup_runs": 1}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("litert") / "train")
    model = ModelSpec(zoo="small_cnn", params={"filters": [8], "dense": 32})
    train.run(TrainConfig(model=model, data=DATA, train=TrainSpec(epochs=4, batch_size=32, learning_rate=0.01)), {}, uri)
    return uri


def converted(parent: str, name: str, target: str = "tflite_litert", **options) -> str:
    uri = str(Path(parent).parent / name)
    if not Path(uri).exists():
        convert.run(ConvertConfig(format=target, data=DATA, **options), {"model": parent}, uri)
    return uri


def size(uri: str) -> int:
    return read_meta(uri).metrics["size_bytes"]


def test_int8_weights_preset_shrinks_the_model_and_runs_in_litert_in_validate(parent, tmp_path):
    float_uri, uri = converted(parent, "fp32", "tflite_fp32"), converted(parent, "int8_weights")
    meta = read_meta(uri)
    assert meta.format == "tflite_litert" and meta.details["recipe"] == [
        {"weights": "int8", "layers": ".*", "activations": "dynamic", "granularity": "channelwise"}
    ]
    assert size(uri) < 0.4 * size(float_uri)  # int8 kernels: about a quarter of the float bytes plus the graph
    assert "int8" in meta.details["op_dtypes"]["FULLY_CONNECTED"] and "int8" in meta.details["op_dtypes"]["CONV_2D"]
    assert meta.details["check_agreement"] >= 0.97
    result = validate.run(ValidateConfig(name="int8_weights", data=DATA, evaluation=EVALUATION), {"model": uri}, str(tmp_path / "v"))
    blessing = json.loads((tmp_path / "v" / "blessing.json").read_text())
    assert blessing["runtime"] == "litert" and blessing["format"] == "tflite_litert"
    assert result["blessed"] and result["metrics"]["accuracy"] > 0.85


def test_int4_weights_on_a_chosen_layer_only(parent):
    int8_uri = converted(parent, "int8_weights")
    uri = converted(parent, "dense_int4", recipe=[{"weights": "int8"}, {"layers": "dense_1", "weights": "int4"}])
    # dense_1 holds most weights (4*4*8 x 32 = 4096): int4 there saves half a byte each; conv_1 and logits keep int8.
    assert size(int8_uri) - size(uri) >= 2_000
    assert read_meta(uri).details["recipe"][1] == {"weights": "int4", "layers": "dense_1", "activations": "dynamic", "granularity": "channelwise"}
    assert read_meta(uri).details["check_agreement"] >= 0.9


def test_int16_activations_are_calibrated_static_quantization(parent):
    meta = read_meta(converted(parent, "a16", recipe="int16_activations"))
    assert meta.details["calibrated"] and meta.calibration_hash
    assert "int16" in meta.details["op_dtypes"]["FULLY_CONNECTED"]
    assert meta.details["check_agreement"] >= 0.97


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("int9_weights", "unknown preset 'int9_weights'; did you mean 'int8_weights'?"),
        ([{"layers": "dense_1", "weights": "int3"}], "rule 1: weights 'int3' is not supported; did you mean 'int8'? use int8, int4"),
        ([{"weights": "int8"}, {"layer": "x", "weights": "int4"}], "rule 2: unknown key 'layer'; did you mean 'layers'?"),
        ([{"weights": "int8", "activations": "int4"}], "rule 1: activations 'int4' is not supported"),
        ([{"layers": "dense_[", "weights": "int4"}], "rule 1: layers 'dense_[' is not a regular expression"),
        ([{"layers": "dense_1"}], "rule 1: weights is missing; set weights: int8 or int4"),
        ([], "give a preset (int8_weights, int4_weights, int8, int16_activations) or a non-empty list of rules"),
    ],
)
def test_a_bad_recipe_is_refused_with_one_line(recipe, message):
    with pytest.raises(ValueError) as caught:
        parse_recipe(recipe)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_bad_recipe_exits_2_with_one_line_and_writes_nothing(parent, tmp_path, cli):
    config = {"format": "tflite_litert", "data": DATA, "recipe": [{"layers": "dense_1", "weights": "int3"}]}
    out = tmp_path / "bad"
    done = cli("step", "convert", "--config", json.dumps(config), "--input", f"model={parent}", "--output", str(out))
    assert done.returncode == 2 and not out.exists()
    assert done.stderr == (
        "modelpress: error: step convert --config: recipe: rule 1: weights 'int3' is not supported; "
        "did you mean 'int8'? use int8, int4\n"
    )


def test_a_rule_matching_no_layer_exits_2_naming_the_layers(parent, tmp_path, cli):
    config = {"format": "tflite_litert", "data": DATA, "recipe": [{"layers": "dense_9", "weights": "int4"}]}
    out = tmp_path / "nomatch"
    done = cli("step", "convert", "--config", json.dumps(config), "--input", f"model={parent}", "--output", str(out))
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().splitlines()[-1].endswith(
        "recipe rule 1: layers 'dense_9' matches no layer of the model; its layers are conv_1, pool_1, flatten, dense_1, logits, probabilities"
    )


def test_recipe_is_an_option_of_tflite_litert_only():
    with pytest.raises(ValueError, match="option 'recipe' does not apply to tflite_int8; it applies to tflite_litert"):
        ConvertConfig(format="tflite_int8", data=DATA, recipe="int8_weights")


def test_a_gate_failure_shows_the_per_layer_error_report_in_the_run_report(parent, tmp_path):
    uri = converted(parent, "all_int4", recipe="int4_weights")
    errors = json.loads((Path(uri) / LAYER_ERRORS_FILE).read_text())
    assert errors["compared_rows"] == 32 and errors["metrics"] == ["mse", "cosine_similarity"]
    layers = errors["intermediate_tensors"]
    assert any("dense_1" in name for name in layers) and all(0 <= e["mse"] < 1 for e in layers.values())
    assert list(layers.values()) == sorted(layers.values(), key=lambda e: -e["mse"])  # worst first

    gates = {"min_accuracy": 0.999}
    result = validate.run(ValidateConfig(name="all_int4", data=DATA, evaluation=EVALUATION, gates=gates), {"model": uri}, str(tmp_path / "v"))
    assert not result["blessed"]
    # The rejection keeps the quantizer's report, where the run report and the Kubeflow HTML report read it.
    assert json.loads((tmp_path / "v" / LAYER_ERRORS_FILE).read_text()) == errors
    blessing = json.loads((tmp_path / "v" / "blessing.json").read_text()) | {"validation_uri": str(tmp_path / "v")}
    write_report(str(tmp_path / "run"), "litert", gates, artifact_rows([blessing], {"all_int4": uri}, {}), [])
    report, page = (tmp_path / "run" / "report.md").read_text(), (tmp_path / "run" / "report.html").read_text()
    worst, numbers = next(iter(layers.items()))
    assert "## Per-layer quantization error" in report and f"`{worst}`" in report and f"{numbers['mse']:.3g}" in report
    assert "<h2>Per-layer quantization error</h2>" in page and f"<td>{numbers['mse']:.3g}</td>" in page
    # Without its parent's validation, the per-layer sensitivity says in one line why it was not measured.
    reason = "not measured: validate was given no parent validation (input parent), so there is no parent model to edit"
    assert f"**all_int4**: {reason}" in report and f"<b>all_int4</b>: {reason}" in page
