"""Structured pruning's per-group ratios: the sensitivity pass and the allocation that follows it."""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.common.tf import import_tf
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.training import TrainSpec
from modelpress.io.data import load_dataset
from modelpress.ml.training import fit
from modelpress.steps.prune.channels import ChannelGraph
from modelpress.steps.prune.config import PruneConfig
from modelpress.steps.prune.structural import allocate, channel_scores, sensitivity, sensitivity_rows


def two_branches(data):
    """Two Dense branches over the pixels, concatenated into the logits: `useful` trained on digits, `dead` with random
    weights that the logits do not read (their rows are zero), so removing its units costs nothing."""
    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.input_shape, name="input")
    pixels = keras.layers.Flatten(name="flatten")(inputs)
    useful = keras.layers.Dense(16, activation="relu", name="useful")(pixels)
    alone = keras.Model(inputs, keras.layers.Dense(data.num_classes, activation="softmax", name="logits")(useful))
    fit(alone, data, TrainSpec(epochs=4, batch_size=64, learning_rate=0.01))
    dead = keras.layers.Dense(16, activation="relu", name="dead")(pixels)
    logits = keras.layers.Dense(data.num_classes, name="logits")(keras.layers.Concatenate(name="joined")([useful, dead]))
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    kernel, bias = alone.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([np.concatenate([kernel, np.zeros_like(kernel)]), bias])
    return model


def test_a_group_that_costs_more_accuracy_keeps_more_of_its_channels():
    data = load_dataset(DigitsData(source="digits"))
    graph = ChannelGraph(two_branches(data))
    assert [group.layers for group in graph.groups] == [["useful"], ["dead"]]
    config = PruneConfig(data={"source": "digits"}, method="structured", allocation="sensitivity", ratio=0.5)
    scores = channel_scores(graph, graph.groups, config, data)
    x, y, split = sensitivity_rows(data, config)
    assert split == "val" and len(y) == data.count("val")
    baseline, table = sensitivity(graph, graph.groups, scores, config.ratio, x, y)
    useful, dead = table
    assert [row["removed"] for row in useful] == [row["removed"] for row in dead] == [4, 8, 12]  # 1/2, 1, 3/2 x 0.5
    assert baseline["accuracy"] > 0.8
    assert all(row["accuracy"] == baseline["accuracy"] and row["loss"] == pytest.approx(baseline["loss"], abs=1e-6) for row in dead)
    assert useful[-1]["accuracy"] < baseline["accuracy"] - 0.05 and useful[-1]["loss"] > baseline["loss"]
    counts = allocate(graph, graph.groups, scores, table, baseline, config.ratio)
    # The dead branch goes as far as it was measured (12 of 16); the useful one loses only what the target still
    # needs: half the multiply-adds (64 inputs x 16 units per branch, 32 x 10 logits) is 1184, 12 dead units give 888.
    assert counts == [4, 12]
    assert graph.multiply_adds(np.zeros(0, dtype=np.int64)) == 2 * 64 * 16 + 32 * 10
