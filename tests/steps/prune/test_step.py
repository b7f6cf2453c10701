"""prune: two tiny models trained once (an mlp with two hidden layers, a small CNN), each method run on them and its
result read back from the artifact as a user would; bad inputs through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf, load_keras_model
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io.data import load_dataset
from modelpress.ml.keras_artifact import save_keras_artifact
from modelpress.ml.models import mlp
from modelpress.steps.prune import step as prune
from modelpress.steps.prune.channels import ChannelGraph
from modelpress.steps.prune.config import PruneConfig
from modelpress.steps.prune.lottery import magnitude_mask
from modelpress.steps.prune.structural import channel_scores, lowest, target_groups
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig
from tests.cli.test_main_bad_inputs import assert_one_line_error
from tests.conftest import TINY_WORKFLOW
from tests.steps.compress_parents import kernels

DATA = {"source": "digits"}
FINE_TUNING = TrainSpec(epochs=2, batch_size=64, learning_rate=0.01)


def train_parent(folder: Path, model: dict) -> str:
    uri = str(folder)
    train.run(
        TrainConfig(model=ModelSpec(**model), data=DATA, train=TrainSpec(epochs=3, batch_size=32, learning_rate=0.01)), {}, uri
    )
    return uri


def run_prune(parent: str, out: Path, **options) -> dict:
    """Prune `parent` into `out`; returns the artifact.json a user reads."""
    prune.run(PruneConfig(data=DATA, train=FINE_TUNING, **options), {"model": parent}, str(out))
    return json.loads((out / "artifact.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prune")


@pytest.fixture(scope="module")
def mlp_parent(work) -> str:
    return train_parent(work / "mlp", {"zoo": "mlp", "params": {"hidden": [32, 16]}})


@pytest.fixture(scope="module")
def cnn_parent(work) -> str:
    return train_parent(work / "cnn", {"zoo": "small_cnn", "params": {"filters": [4, 8], "dense": 16}})


@pytest.fixture(scope="module")
def magnitude(work, mlp_parent) -> Path:
    run_prune(mlp_parent, work / "magnitude", method="magnitude", sparsity=0.5, schedule="polynomial")
    return work / "magnitude"


# --------------------------------------------------------------------------------------------------------- magnitude
def test_magnitude_reaches_the_target_sparsity_in_every_layer(magnitude, mlp_parent):
    meta = json.loads((magnitude / "artifact.json").read_text())
    parent = json.loads((Path(mlp_parent) / "artifact.json").read_text())
    found = kernels(magnitude)
    assert set(found) == {"dense_1", "dense_2", "logits"}
    for name, kernel in found.items():
        assert abs(np.mean(kernel == 0) - 0.5) <= 0.01, name
        assert meta["details"]["weights"]["layers"][name]["sparsity"] == pytest.approx(np.mean(kernel == 0), abs=1e-4)
        assert meta["details"]["weights"]["layers"][name]["unique"] == np.unique(kernel).size
    assert meta["step"] == "prune" and meta["parent"] == mlp_parent
    assert meta["metrics"]["params"] == parent["metrics"]["params"]  # same shapes, zeros in place
    assert meta["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert meta["metrics"]["accuracy"] > 0.6  # 10 classes: a broken model scores about 0.1
    assert meta["metrics"]["size_gzip_bytes"] < meta["metrics"]["size_bytes"]
    assert meta["details"]["schedule"] == "polynomial" and meta["details"]["parent_accuracy"] == parent["metrics"]["accuracy"]


def test_stripped_model_has_no_pruning_wrappers(magnitude, mlp_parent):
    tf, _ = import_tf()
    model = load_keras_model(magnitude / "model.h5")
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Flatten", "Dense", "Dense", "Dense", "Activation"]
    assert [layer.name for layer in model.layers] == [layer.name for layer in load_keras_model(Path(mlp_parent) / "model.h5").layers]
    served = tf.saved_model.load(str(magnitude / "saved_model"))
    names = [variable.name for variable in served.variables]
    assert names and not [name for name in names if any(part in name for part in ("mask", "threshold", "pruning_step"))]


def test_constant_schedule_prunes_only_the_named_layers(work, mlp_parent):
    meta = run_prune(mlp_parent, work / "constant", sparsity=0.7, schedule="constant", layers=["dense_2"])
    found = kernels(work / "constant")
    assert abs(np.mean(found["dense_2"] == 0) - 0.7) <= 0.01
    assert np.count_nonzero(found["dense_1"] == 0) == 0 and np.count_nonzero(found["logits"] == 0) == 0
    assert meta["details"]["pruned_layers"] == ["dense_2"] and meta["details"]["schedule"] == "constant"


def test_2_4_pattern_holds_in_every_group_of_4_input_weights(work, cnn_parent):
    meta = run_prune(cnn_parent, work / "pattern", pattern="2:4")
    found = kernels(work / "pattern")
    for name in ("conv_2", "dense_1", "logits"):
        kernel = found[name]
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)  # consecutive input channels of one output unit
        assert np.count_nonzero(groups, axis=1).max() <= 2, name
        assert np.mean(kernel == 0) == pytest.approx(0.5), name
    # The first convolution reads 1 channel: no group of 4 exists, so it stays dense and the artifact says why.
    assert np.count_nonzero(found["conv_1"] == 0) == 0
    assert "1 input channels are not a multiple of the group size 4" in meta["details"]["left_dense"]["conv_1"]


def test_pattern_on_a_layer_that_cannot_take_it_is_refused(work, cnn_parent):
    with pytest.raises(UserError, match=r"pattern cannot apply to layer 'conv_1': its 1 input channels are not a multiple"):
        run_prune(cnn_parent, work / "refused", pattern="2:4", layers=["conv_1", "conv_2"])
    assert not (work / "refused").exists()


def test_a_layer_without_weights_is_refused_with_the_layers_that_have_them(work, mlp_parent):
    with pytest.raises(UserError, match=r"layer 'flatten' has no kernel to act on; layers with weights: dense_1, dense_2, logits"):
        run_prune(mlp_parent, work / "flatten", layers=["flatten"])


@pytest.fixture(scope="module")
def nested_parent(work) -> str:
    return train_parent(work / "nested", {"builder": "tests.steps.compress_parents:nested_mlp"})


@pytest.mark.parametrize("options", [{"method": "magnitude"}, {"method": "lottery", "rounds": 1}], ids=["magnitude", "lottery"])
def test_layers_inside_a_nested_model_are_pruned(work, nested_parent, options):
    method = options["method"]
    meta = run_prune(nested_parent, work / f"nested_{method}", sparsity=0.5, **options)
    model = load_keras_model(work / f"nested_{method}" / "model.h5")
    inner = {layer.name: layer.kernel.numpy() for layer in model.get_layer("backbone").layers if hasattr(layer, "kernel")}
    assert set(inner) == {"inner_1", "inner_2"}
    for name, kernel in inner.items():
        assert abs(np.mean(kernel == 0) - 0.5) <= 0.01, name
        assert meta["details"]["weights"]["layers"][name]["sparsity"] == pytest.approx(np.mean(kernel == 0), abs=1e-4)


def test_a_layer_named_inside_a_nested_model_is_pruned_alone(work, nested_parent):
    meta = run_prune(nested_parent, work / "nested_inner", sparsity=0.5, layers=["inner_2"])
    backbone = load_keras_model(work / "nested_inner" / "model.h5").get_layer("backbone")
    assert abs(np.mean(backbone.get_layer("inner_2").kernel.numpy() == 0) - 0.5) <= 0.01
    assert np.count_nonzero(backbone.get_layer("inner_1").kernel.numpy() == 0) == 0
    assert meta["details"]["pruned_layers"] == ["inner_2"]


@pytest.fixture(scope="module")
def depthwise_parent(work) -> str:
    """An untrained conv + depthwise conv model saved as an artifact (tfmot keeps depthwise kernels whole)."""
    _, keras = import_tf()
    inputs = keras.Input((8, 8, 1), name="input")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="depthwise")(x)
    logits = keras.layers.Dense(10, name="logits")(keras.layers.Flatten(name="flatten")(x))
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    folder = work / "depthwise"
    folder.mkdir()
    config = TrainConfig(model=ModelSpec(builder="tests.steps.prune.test_step:depthwise"), data=DATA)
    save_keras_artifact(model, folder, step="train", config=config, parent=None, data_hash=None, metrics={"accuracy": 0.1})
    return str(folder)


def test_layers_tfmot_cannot_prune_stay_dense_and_are_listed(work, depthwise_parent):
    meta = run_prune(depthwise_parent, work / "depthwise_pruned", sparsity=0.5)
    found = kernels(work / "depthwise_pruned")
    assert np.mean(found["conv"] == 0) == pytest.approx(0.5, abs=0.01) and np.count_nonzero(found["depthwise"] == 0) == 0
    assert meta["details"]["left_dense"] == {"depthwise": "tfmot prunes no weights of a DepthwiseConv2D"}
    assert meta["details"]["pruned_layers"] == ["conv", "logits"]


def test_naming_a_layer_tfmot_cannot_prune_is_refused(work, depthwise_parent):
    with pytest.raises(UserError, match=r"tfmot prunes no weights of a DepthwiseConv2D \(layer 'depthwise'\); leave it out"):
        run_prune(depthwise_parent, work / "depthwise_named", layers=["conv", "depthwise"])
    assert not (work / "depthwise_named").exists()


# -------------------------------------------------------------------------------------------------------- structured
def test_structured_pruning_builds_a_smaller_model(work, cnn_parent):
    tf, _ = import_tf()
    meta = run_prune(cnn_parent, work / "structured", method="structured", ratio=0.5)
    units = meta["details"]["units"]
    assert units == {"conv_1": {"before": 4, "after": 2}, "conv_2": {"before": 8, "after": 4}, "dense_1": {"before": 16, "after": 8}}
    # conv 3x3x1x2+2, conv 3x3x2x4+4, flatten 2x2x4 -> dense 16x8+8, logits 8x10+10
    assert meta["metrics"]["params"] == 20 + 76 + 136 + 90 == meta["details"]["params_after"]
    assert meta["details"]["params_before"] == 40 + 296 + 528 + 170
    # conv_1 on 8x8 positions, conv_2 on 4x4 (after pooling), then dense_1 and logits
    assert meta["details"]["multiply_adds_before"] == 64 * 9 * 4 + 16 * 9 * 4 * 8 + 32 * 16 + 16 * 10
    assert meta["details"]["multiply_adds_after"] == 64 * 9 * 2 + 16 * 9 * 2 * 4 + 16 * 8 + 8 * 10
    assert meta["metrics"]["accuracy"] > 0.5
    served = tf.saved_model.load(str(work / "structured" / "saved_model"))
    shapes = {variable.name: tuple(variable.shape) for variable in served.variables}
    assert shapes["conv_1/kernel:0"] == (3, 3, 1, 2) and shapes["conv_2/kernel:0"] == (3, 3, 2, 4)
    assert shapes["dense_1/kernel:0"] == (16, 8) and shapes["logits/kernel:0"] == (8, 10)
    model = load_keras_model(work / "structured" / "model.h5")
    assert [layer.name for layer in model.layers[-2:]] == ["logits", "probabilities"] and model.output_shape == (None, 10)


def chain_with_batch_norm():
    """Conv -> BN -> ReLU -> pool -> Conv -> Flatten -> Dense -> Dense -> logits -> softmax, random weights and BN stats."""
    _, keras = import_tf()
    inputs = keras.Input((6, 6, 3), name="input")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_1")(inputs)
    x = keras.layers.BatchNormalization(name="bn_1")(x)
    x = keras.layers.ReLU(name="relu_1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(7, activation="relu", name="dense_1")(x)
    x = keras.layers.Dense(6, activation="relu", name="dense_2")(x)
    x = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in w.name else rng.normal(size=w.shape) for w in model.weights])
    return model


def rebuild_keeping(model, kept: dict[str, np.ndarray]):
    """The model rebuilt with only the `kept` units of each named layer."""
    graph = ChannelGraph(model)
    return graph.rebuild(np.concatenate([np.delete(graph.channel_of(name), units) for name, units in kept.items()]))


def test_rebuilt_model_computes_what_the_surviving_units_computed():
    model = chain_with_batch_norm()
    kept = {"conv_1": np.array([0, 2, 5]), "conv_2": np.array([1, 4]), "dense_1": np.array([0, 3, 6]), "dense_2": np.array([2, 5])}
    smaller = rebuild_keeping(model, kept)
    x = np.random.default_rng(1).uniform(size=(8, 6, 6, 3)).astype("float32")
    # The same as the original with the removed units' outgoing weights set to zero.
    reads = {"conv_2": ("conv_1", 2), "dense_1": ("conv_2", 0), "dense_2": ("dense_1", 0), "logits": ("dense_2", 0)}
    for reader, (source, axis) in reads.items():
        kernel, bias = model.get_layer(reader).get_weights()
        removed = np.setdiff1d(np.arange(model.get_layer(source).kernel.shape[-1]), kept[source])
        if reader == "dense_1":  # through the Flatten: every spatial position (3x3) of a removed filter
            removed = np.arange(kernel.shape[0]).reshape(3, 3, 5)[..., removed].ravel()
        np.moveaxis(kernel, axis, 0)[removed] = 0
        model.get_layer(reader).set_weights([kernel, bias])
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert smaller.count_params() < model.count_params()
    assert smaller.get_layer("bn_1").moving_variance.shape == (3,)


def test_a_sequential_model_is_rebuilt_too():
    _, keras = import_tf()
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(6, activation="relu", name="dense_1"),
            keras.layers.Dense(3, name="logits"),
            keras.layers.Activation("softmax", name="probabilities"),
        ]
    )
    smaller = rebuild_keeping(model, {"dense_1": np.array([1, 2, 5])})
    kernel, bias = model.get_layer("logits").get_weights()
    kernel[[0, 3, 4]] = 0
    model.get_layer("logits").set_weights([kernel, bias])
    x = np.random.default_rng(2).uniform(size=(5, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert smaller.get_layer("dense_1").kernel.shape == (16, 3)


def test_units_are_ranked_by_kernel_norm_or_by_activation():
    model = mlp((8, 8, 1), 10, hidden=[8])
    kernel, bias = model.get_layer("dense_1").get_weights()
    kernel[:, :4] = 0  # units 0-3: no weights (smallest norm) ...
    kernel[:, 4:] = np.abs(kernel[:, 4:]) + 0.1  # ... units 4-7 see every positive pixel
    model.get_layer("dense_1").set_weights([kernel, np.zeros_like(bias)])
    data = load_dataset(DigitsData(source="digits"))
    graph = ChannelGraph(model)
    assert [group.layers for group in graph.groups] == [["dense_1"]]
    for criterion in ("magnitude", "activation"):
        config = PruneConfig(data=DATA, method="structured", criterion=criterion, activation_samples=64)
        [scores] = channel_scores(graph, graph.groups, config, data)
        removed = lowest(graph.groups[0], scores, 4)
        assert np.flatnonzero(graph.kept("dense_1", removed)).tolist() == [4, 5, 6, 7], criterion


def test_structured_pruning_never_shrinks_the_output_layer(work, mlp_parent):
    with pytest.raises(UserError, match=r"layer 'logits' produces the model's outputs, one unit per class"):
        run_prune(mlp_parent, work / "logits", method="structured", layers=["dense_1", "logits"])


def test_channels_added_to_the_model_input_are_never_removed():
    _, keras = import_tf()
    inputs = keras.Input((4,), name="input")
    residual = keras.layers.Add(name="skip")([inputs, keras.layers.Dense(4, name="hidden")(inputs)])
    graph = ChannelGraph(keras.Model(inputs, keras.layers.Dense(3, name="logits")(residual)))
    assert graph.groups == []  # hidden's channels are summed with the input's, which stay
    with pytest.raises(UserError, match=r"layer 'hidden' adds its channels to the model's input \(through Add\)"):
        target_groups(graph, PruneConfig(data=DATA, method="structured", layers=["hidden"]))
    with pytest.raises(UserError, match=r"the model has no hidden Dense or Conv2D layer to shrink"):
        target_groups(graph, PruneConfig(data=DATA, method="structured"))


def test_structured_pruning_refuses_a_layer_it_cannot_follow():
    _, keras = import_tf()
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Reshape((3, 2), name="fold")(hidden)))
    with pytest.raises(UserError, match=r"cannot follow layer 'fold', a Reshape; .*: use method magnitude for this model"):
        ChannelGraph(model)


# ----------------------------------------------------------------------------------------------------------- lottery
def test_lottery_rounds_are_recorded_and_reach_the_final_sparsity(work, mlp_parent):
    meta = run_prune(mlp_parent, work / "lottery", method="lottery", sparsity=0.5, rounds=2, random_init_control=True)
    rounds = meta["details"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    # Each round removes the same share of what is left: 1 - sqrt(0.5) = 29.3%, then 50%.
    assert [r["sparsity"] for r in rounds] == pytest.approx([0.0, 1 - 0.5**0.5, 0.5], abs=0.002)
    assert rounds[0]["accuracy"] == json.loads((Path(mlp_parent) / "artifact.json").read_text())["metrics"]["accuracy"]
    assert rounds[-1]["accuracy"] == meta["metrics"]["accuracy"] and all(r["epochs"] == 2 for r in rounds[1:])
    for name, kernel in kernels(work / "lottery").items():
        assert abs(np.mean(kernel == 0) - 0.5) <= 0.002, name
    assert 0.3 < meta["details"]["random_init_accuracy"] <= 1  # trained from fresh weights: far above chance (0.1)


def test_magnitude_mask_keeps_pruned_weights_pruned():
    kernel = np.array([[0.1, -0.9, 0.5], [0.3, -0.2, 0.8]], dtype="float32")
    first = magnitude_mask(kernel, np.ones_like(kernel), 1 / 3)
    assert first.tolist() == [[0, 1, 1], [1, 0, 1]]
    grown = kernel.copy()
    grown[0, 0] = 5.0  # a pruned weight that grew back (it is zeroed in training) does not return
    assert magnitude_mask(grown, first, 2 / 3).tolist() == [[0, 1, 0], [0, 0, 1]]


def test_lottery_needs_the_initial_weights_of_a_train_artifact(work, magnitude):
    with pytest.raises(UserError, match=r"initial.weights.h5.*only a train artifact holds; put the lottery prune first"):
        run_prune(str(magnitude), work / "lottery_after_prune", method="lottery")
    assert not (work / "lottery_after_prune").exists()


# ------------------------------------------------------------------------------------------------ through the CLI
def prune_command(cli, parent: str, out: Path, config: dict):
    return cli("step", "prune", "--config", json.dumps({"data": DATA, **config}), "--input", f"model={parent}", "--output", str(out))


@pytest.mark.parametrize(
    ("config", "phrases"),
    [
        ({"sparsity": 1.0}, ["sparsity 1.0 is outside [0, 1)"]),
        ({"method": "lottery", "sparsity": -0.1}, ["sparsity -0.1 is outside [0, 1)"]),
        ({"method": "structured", "ratio": 1.0}, ["ratio 1.0 is outside (0, 1)"]),
        ({"ratio": 0.5}, ["option 'ratio' does not apply to method magnitude; it applies to structured"]),
        ({"pattern": "4:2"}, ["pattern '4:2' must be 'N:M' with 0 < N < M"]),
        ({"pattern": "2:4", "sparsity": 0.5}, ["option 'sparsity' does not apply with pattern '2:4'"]),
        ({"method": "random"}, ["method", "'magnitude', 'structured' or 'lottery'"]),
    ],
)
def test_bad_config_is_one_line_before_anything_runs(cli, tmp_path, config, phrases):
    result = prune_command(cli, str(tmp_path / "missing-parent"), tmp_path / "out", config)
    assert_one_line_error(result, "step prune --config", *phrases)
    assert not (tmp_path / "out").exists()


def test_bad_technique_parameter_in_a_workflow_fails_the_check(cli, tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(TINY_WORKFLOW + "compress:\n  - {technique: prune, method: magnitude, sparsity: 1.5}\n")
    assert_one_line_error(cli("check", str(path)), "compress[0] (prune)", "sparsity 1.5 is outside [0, 1)")


def test_unknown_layer_is_named_with_the_layers_there_are(cli, tmp_path, mlp_parent):
    result = prune_command(cli, mlp_parent, tmp_path / "out", {"layers": ["dense_9"]})
    assert_one_line_error(result, "no layer named 'dense_9' in the model; layers with weights: dense_1, dense_2, logits")
    assert result.returncode == 2 and not (tmp_path / "out").exists()


def test_ratio_that_would_remove_every_unit_is_refused(cli, tmp_path, mlp_parent):
    result = prune_command(cli, mlp_parent, tmp_path / "out", {"method": "structured", "ratio": 0.99})
    assert_one_line_error(result, "ratio 0.99 would remove all 32 units of layer 'dense_1'")
    assert result.returncode == 2 and not (tmp_path / "out").exists()


def test_workflow_with_prune_runs_end_to_end(cli, tmp_path):
    path, out = tmp_path / "wf.yaml", tmp_path / "run"
    path.write_text(TINY_WORKFLOW + "compress:\n  - {technique: prune, method: magnitude, sparsity: 0.5, epochs: 1}\n")
    result = cli("run", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "prune epoch 1/1" in result.stderr
    rows = {row["name"]: row for row in json.loads((out / "summary.json").read_text())["artifacts"]}
    assert set(rows) == {"train", "prune"}
    meta = json.loads((out / "artifacts" / "prune" / "artifact.json").read_text())
    assert meta["parent"] == str(out / "artifacts" / "train") and meta["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert rows["prune"]["metrics"]["accuracy"] == pytest.approx(meta["metrics"]["accuracy"])
