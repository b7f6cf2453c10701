"""The weight measurements every compression step records in artifact.json."""

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf
from modelpress.ml.compression import layer_names, weight_stats


@pytest.fixture(scope="module")
def model():
    _, keras = import_tf()
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="logits")(hidden)
    model = keras.Model(inputs, outputs)
    kernel = np.arange(12, dtype="float32").reshape(4, 3) % 3  # values 0, 1, 2: a third of them zero
    model.get_layer("hidden").set_weights([kernel, np.ones(3, "float32")])
    model.get_layer("logits").set_weights([np.full((3, 2), 0.5, "float32"), np.zeros(2, "float32")])
    return model


def test_weight_stats_count_zeros_and_distinct_values_per_kernel(model):
    stats = weight_stats(model)
    assert stats["layers"]["hidden"] == {"params": 12, "sparsity": round(4 / 12, 4), "unique": 3}
    assert stats["layers"]["logits"] == {"params": 6, "sparsity": 0.0, "unique": 1}
    assert stats["kernel_params"] == 18  # biases are not counted
    assert stats["sparsity"] == round(4 / 18, 4)


def test_layer_names_default_to_every_layer_with_a_kernel(model):
    assert layer_names(model, None, "prune") == ["hidden", "logits"]


def test_unknown_layer_name_is_named_with_the_known_ones(model):
    with pytest.raises(UserError, match=r"prune: no layer named 'hiden' in the model; layers with weights: hidden, logits"):
        layer_names(model, ["hiden"], "prune")


@pytest.fixture(scope="module")
def nested():
    """input -> backbone (inner_1, inner_2) -> logits, like mobilenet_v2's backbone inside its model."""
    _, keras = import_tf()
    features = keras.Input((4,))
    inner = keras.layers.Dense(3, name="inner_2")(keras.layers.Dense(3, name="inner_1")(features))
    backbone = keras.Model(features, inner, name="backbone")
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(backbone(inputs)))


def test_layer_names_reach_inside_a_nested_model(nested):
    assert layer_names(nested, None, "cluster") == ["inner_1", "inner_2", "logits"]
    assert layer_names(nested, ["inner_2"], "cluster") == ["inner_2"]
    assert layer_names(nested, ["backbone", "logits"], "cluster") == ["inner_1", "inner_2", "logits"]  # the model: its layers
    with pytest.raises(UserError, match=r"no layer named 'inner_3' in the model; layers with weights: inner_1, inner_2, logits"):
        layer_names(nested, ["inner_3"], "cluster")
