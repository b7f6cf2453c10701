"""The channel graph of structured pruning: which channels are tied (residual adds, concatenations, depthwise
convolutions, a nested backbone), and that the rebuilt model computes exactly what the kept channels computed."""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.common.tf import import_tf
from modelpress.ml.models import mobilenet_v2, resnet
from modelpress.steps.prune.channels import ChannelGraph


def randomised(model, seed: int = 0):
    """Random weights and BatchNormalization statistics, so that every layer, BN included, changes the values."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.name.split("/")[-1]
        if "variance" in name:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif any(part in name for part in ("gamma", "beta", "moving_mean", "bias")):
            weight.assign(rng.normal(scale=0.5, size=weight.shape))
    return model


def tiny_resnet():
    return randomised(resnet((12, 12, 3), 5, width=8, blocks=(2, 2)))


def tiny_mobilenet():
    return randomised(mobilenet_v2((32, 32, 3), 5, alpha=0.35))


def test_resnet_groups_tie_every_producer_of_a_residual_sum():
    graph = ChannelGraph(tiny_resnet())
    assert [group.layers for group in graph.groups] == [
        ["stem", "stage1_block1_conv2", "stage1_block2_conv2"],  # identity shortcuts: the stem's channels run through
        ["stage1_block1_conv1"],
        ["stage1_block2_conv1"],
        ["stage2_block1_conv1"],
        ["stage2_block1_shortcut", "stage2_block1_conv2", "stage2_block2_conv2"],  # the projection starts a new sum
        ["stage2_block2_conv1"],
    ]
    assert [len(group.channels) for group in graph.groups] == [8, 8, 8, 16, 16, 16]
    # Position i of each producer of a sum is one channel: removing it removes it in all of them.
    np.testing.assert_array_equal(graph.channel_of("stem"), graph.channel_of("stage1_block2_conv2"))
    np.testing.assert_array_equal(graph.channel_of("stage1_block1_out"), graph.channel_of("stem"))
    assert graph.group_of("logits") is None  # its units are the classes


def test_mobilenet_groups_follow_the_inverted_residuals_inside_the_nested_backbone():
    model = tiny_mobilenet()
    assert any(type(layer).__name__ == "Functional" for layer in model.layers)  # the backbone is a nested model
    graph = ChannelGraph(model)
    groups = [group.layers for group in graph.groups]
    assert len(groups) == 25 and ["Conv1"] in groups and ["Conv_1"] in groups
    assert ["block_1_project", "block_2_project"] in groups
    assert ["block_6_project", "block_7_project", "block_8_project", "block_9_project"] in groups
    assert ["block_16_project"] in groups  # no residual: 112 -> 320 channels
    assert all(len(layers) == 1 for layers in groups if layers[0].endswith("_expand"))
    # A depthwise convolution's channels are its input's: they go with the expansion that produced them.
    np.testing.assert_array_equal(graph.channel_of("block_3_depthwise"), graph.channel_of("block_3_expand"))
    assert not any(graph.nodes[name].kind == "DepthwiseConv2D" for layers in groups for name in layers)
    assert graph.input == "input" and graph.output == "probabilities"


def test_concatenate_offsets_the_channels_after_it():
    _, keras = import_tf()
    inputs = keras.Input((5, 5, 2), name="input")
    left = keras.layers.Conv2D(3, 3, padding="same", name="left")(inputs)
    right = keras.layers.Conv2D(2, 1, name="right")(inputs)
    joined = keras.layers.Concatenate(name="joined")([left, right])
    reader = keras.layers.Conv2D(4, 1, name="reader")(joined)
    logits = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D(name="pool")(reader))
    model = randomised(keras.Model(inputs, logits))
    graph = ChannelGraph(model)
    np.testing.assert_array_equal(graph.channel_of("joined"), np.concatenate([graph.channel_of("left"), graph.channel_of("right")]))
    removed = np.array([graph.channel_of("left")[1], graph.channel_of("right")[0]])
    smaller = graph.rebuild(removed)
    # The reader keeps the input rows of left's channels 0 and 2 and of right's channel 1: rows 0, 2 and 3 + 1.
    np.testing.assert_array_equal(smaller.get_layer("reader").kernel.numpy(), model.get_layer("reader").kernel.numpy()[:, :, [0, 2, 4], :])
    assert smaller.get_layer("left").filters == 2 and smaller.get_layer("right").filters == 1


def layer_outputs(model, x: np.ndarray) -> dict[str, np.ndarray]:
    _, keras = import_tf()
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    outputs = keras.Model(model.inputs, [layer.output for layer in layers]).predict(x, verbose=0)
    return {layer.name: out for layer, out in zip(layers, outputs, strict=True)}


@pytest.mark.parametrize("build", [tiny_resnet, tiny_mobilenet], ids=["resnet", "mobilenet_v2"])
def test_pruned_model_computes_exactly_what_its_kept_channels_computed(build):
    """What "exact" means: the reference is the original model in which every kernel row that reads a removed channel
    is zero, i.e. the removed channels are forced to zero wherever a Conv2D or Dense reads them. BatchNormalization
    runs in inference mode (its moving statistics), so a removed channel is not zero everywhere in the reference (its
    BN adds beta, and a ReLU after that may keep it), but nothing reads it. Every layer of the pruned model must then
    equal the same layer of the reference on the kept channels, up to float32 rounding of sums taken over fewer
    terms: checking every layer, not only the logits, is what shows no kept channel reads a removed one."""
    model = build()
    graph = ChannelGraph(model)
    rng = np.random.default_rng(1)
    removed = np.concatenate([rng.choice(group.channels, len(group.channels) // 2, replace=False) for group in graph.groups])
    smaller = graph.rebuild(removed)
    with graph.reads_zeroed(removed):
        reference = graph.rebuild(np.zeros(0, dtype=np.int64))  # a flat copy of the zeroed original, every channel
    x = rng.uniform(size=(6, *model.input_shape[1:])).astype("float32")
    pruned, expected = layer_outputs(smaller, x), layer_outputs(reference, x)
    assert set(pruned) == set(expected)
    for name, values in pruned.items():
        kept = graph.kept(name, removed)
        assert values.shape[-1] == kept.sum(), name
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(values, expected[name][..., kept], rtol=1e-5, atol=1e-5 * scale, err_msg=name)
    # The removal changed what the model computes (the reference is not the unpruned model), and shrank it.
    unpruned = import_tf()[1].Model(model.inputs, model.get_layer("logits").output).predict(x, verbose=0)
    assert np.abs(unpruned - pruned["logits"]).max() > 1e-2
    assert smaller.count_params() < 0.5 * model.count_params()
    assert graph.multiply_adds(removed) < 0.5 * graph.multiply_adds(np.zeros(0, dtype=np.int64))


def test_multiply_adds_count_each_kernel_once_per_output_position():
    graph = ChannelGraph(resnet((4, 4, 1), 3, width=2, blocks=(1,)))
    # stem 3x3x1x2 and two 3x3x2x2 convolutions at 4x4 positions, then logits 2x3
    assert graph.multiply_adds(np.zeros(0, dtype=np.int64)) == 16 * 9 * (1 * 2 + 2 * 2 + 2 * 2) + 2 * 3
    removed = graph.channel_of("stage1_block1_conv1")[:1]  # one of the inner convolution's two filters
    assert graph.multiply_adds(removed) == 16 * 9 * (1 * 2 + 2 * 1 + 1 * 2) + 2 * 3
