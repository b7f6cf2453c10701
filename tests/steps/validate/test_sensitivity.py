"""The per-layer sensitivity of a rejected artifact: each technique's layer edit does what the artifact's step did,
and a layer made fragile on purpose is ranked first."""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.common.tf import import_tf
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.training import TrainSpec
from modelpress.io.artifacts import ArtifactMeta
from modelpress.io.data import load_dataset
from modelpress.ml import training
from modelpress.ml.models import mlp
from modelpress.steps.validate.sensitivity import (
    clustered,
    fake_quantized,
    magnitude_pruned,
    measure_layers,
    pattern_pruned,
    technique_edit,
    units_removed,
)


def meta(step: str, format: str = "saved_model", **details) -> ArtifactMeta:
    return ArtifactMeta(format=format, step=step, model_path="m", config_hash="h", details=details)


@pytest.fixture(scope="module")
def kernel() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 3, 8, 6)).astype(np.float32)  # a Conv2D kernel: h, w, in, out


def test_quantized_kernels_sit_on_an_integer_grid_per_output_channel(kernel):
    quantized = fake_quantized(kernel, 8, depthwise=False)
    for channel in range(kernel.shape[-1]):
        scale = np.abs(kernel[..., channel]).max() / 127
        steps = quantized[..., channel] / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.abs(quantized[..., channel] - kernel[..., channel]).max() <= scale / 2 + 1e-6
    assert len(np.unique(fake_quantized(kernel, 4, depthwise=False)[..., 0])) <= 15  # int4: -7..7


def test_magnitude_pruning_zeroes_the_smallest_share(kernel):
    pruned = magnitude_pruned(kernel, 0.75)
    assert np.count_nonzero(pruned == 0) == round(kernel.size * 0.75)
    assert np.abs(kernel[pruned != 0]).min() >= np.abs(kernel[pruned == 0]).max()


def test_a_pattern_keeps_the_largest_n_of_every_m_input_weights(kernel):
    pruned = pattern_pruned(kernel, 2, 4)
    groups = np.moveaxis(pruned, -2, -1).reshape(3, 3, 6, 2, 4)
    original = np.moveaxis(kernel, -2, -1).reshape(3, 3, 6, 2, 4)
    assert (np.count_nonzero(groups, axis=-1) == 2).all()
    kept = np.sort(np.abs(original), axis=-1)[..., 2:]
    np.testing.assert_array_equal(np.sort(np.abs(groups), axis=-1)[..., 2:], kept)


def test_clustering_leaves_k_values_and_keeps_zeros(kernel):
    sparse = magnitude_pruned(kernel, 0.5)
    result = clustered(sparse, 4, keep_zeros=True)
    assert (result[sparse == 0] == 0).all() and len(np.unique(result[sparse != 0])) == 4
    assert np.abs(result - sparse).mean() < np.abs(sparse[sparse != 0]).std() / 2  # values moved to near centroids


def test_structured_pruning_silences_the_weakest_units_with_their_bias():
    _, keras = import_tf()
    layer = keras.layers.Dense(4)
    layer.build((None, 3))
    kernel = np.array([[1, 5, 0.1, 3]] * 3, dtype=np.float32)
    layer.set_weights([kernel, np.ones(4, np.float32)])
    edited_kernel, bias = units_removed(layer, 0.5)
    np.testing.assert_array_equal(edited_kernel, kernel * [0, 1, 0, 1])
    np.testing.assert_array_equal(bias, [0, 1, 0, 1])


def test_each_artifact_step_gets_its_own_edit_or_a_reason():
    assert technique_edit(meta("convert", "tflite_int8")).description.startswith("kernels rounded to int8")
    litert = meta("convert", "tflite_litert", recipe=[{"weights": "int8"}, {"weights": "int4", "layers": "dense"}])
    assert technique_edit(litert).description.startswith("kernels rounded to int4")
    assert "keeps float arithmetic" in technique_edit(meta("convert", "onnx"))
    assert technique_edit(meta("prune", method="magnitude", target_sparsity=0.8, pruned_layers=["d"])).layers == ("d",)
    assert technique_edit(meta("prune", method="structured", ratio=0.5, units={"d": {}})).description.startswith("the 50% output units")
    assert technique_edit(meta("cluster", clusters=8, clustered_layers=["d"])).technique == "clustering"
    assert "compressed from nothing" in technique_edit(meta("train"))
    assert "layers of its own" in technique_edit(meta("distill"))


@pytest.fixture(scope="module")
def fragile():
    """A digits MLP whose second hidden layer computes as before but cannot take int8 weights: one of its inputs is
    a dead unit (always 0), and that input's weights are huge, so each output channel's int8 scale rounds every
    other weight of the layer to zero."""
    _, keras = import_tf()
    data = load_dataset(DigitsData(source="digits"))
    keras.utils.set_random_seed(0)
    model = mlp(data.input_shape, data.num_classes, hidden=[32, 32])
    training.fit(model, data, TrainSpec(epochs=8, batch_size=64, learning_rate=3e-3))
    before = model.predict(data.x_val, verbose=0)
    first, second = model.get_layer("dense_1"), model.get_layer("dense_2")
    dead = int(np.argmin(np.abs(first.kernel.numpy()).sum(axis=0)))  # the unit that matters least
    kernel, bias = first.get_weights()
    kernel[:, dead], bias[dead] = 0, -1.0
    first.set_weights([kernel, bias])
    kernel, bias = second.get_weights()
    kernel[dead, :] = 1e4
    second.set_weights([kernel, bias])
    return model, data, before


def test_the_fragile_layer_is_ranked_first(fragile):
    model, data, before = fragile
    assert training.test_accuracy(model, data) > 0.85
    changed = np.mean(np.argmax(model.predict(data.x_val, verbose=0), axis=1) != np.argmax(before, axis=1))
    assert changed < 0.05  # in float the planted layer still computes what it did
    weights = model.get_weights()
    found = measure_layers(model, technique_edit(meta("convert", "tflite_int8")), data.x_val, data.y_val, 256, 32)
    for restored, saved in zip(model.get_weights(), weights, strict=True):  # every edit was undone
        np.testing.assert_array_equal(restored, saved)
    ranked = [layer["layer"] for layer in found["layers"]]
    assert sorted(ranked) == ["dense_1", "dense_2", "logits"]
    worst, *others = found["layers"]
    assert worst["layer"] == "dense_2" and worst["drop"] > 0.5 and worst["changed"] > 0.5
    assert all(layer["drop"] < 0.05 for layer in others)
    assert found["together"]["layers"] == 3 and found["together"]["drop"] > 0.5
    assert found["reference_accuracy"] == pytest.approx(np.mean(np.argmax(model.predict(data.x_val, verbose=0), axis=1) == data.y_val))


def test_the_layer_cap_measures_the_largest_layers(fragile):
    model, data, _ = fragile
    found = measure_layers(model, technique_edit(meta("convert", "tflite_int8")), data.x_val[:50], data.y_val[:50], 256, 2)
    assert found["layers_measured"] == 2 and {layer["layer"] for layer in found["layers"]} == {"dense_1", "dense_2"}  # 64x32, 32x32
    assert found["together"]["layers"] == 3
