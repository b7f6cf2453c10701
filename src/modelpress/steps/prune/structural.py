"""Structural pruning: remove whole neurons (Dense) and filters (Conv2D), rebuild a physically smaller model, copy the
surviving weights into it and fine-tune. The result has fewer parameters and less arithmetic, not just more zeros.

It works on chains (each layer feeds the next: the zoo's mlp and small_cnn, or a user builder of that shape). The
output layer is never shrunk: its units are the classes. Removing a unit also removes its column in every
channel-wise layer after it (BatchNormalization, pooling, activations) and its rows in the next Dense or Conv2D
(through a Flatten, every spatial position of a removed filter).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io.data import calibration_subset
from modelpress.ml.compression import layer_names
from modelpress.ml.training import fit
from modelpress.steps.prune.config import PruneConfig

SHRINKABLE = {"Dense": "units", "Conv2D": "filters"}  # layer type -> the config key of its output width
# Layers that keep each channel where it is: the surviving channel indices pass through them unchanged.
CHANNELWISE = (
    "BatchNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Dropout",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
)
SUPPORTED = ("Flatten", *SHRINKABLE, *CHANNELWISE)


def check_chain(model) -> list:
    """The model's layers after its input (functional or Sequential), each reading the one before; anything else
    cannot be rebuilt by this method."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError("prune: structured pruning needs a model with one input and one output; use method magnitude")
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    previous = model.inputs[0]
    for layer in layers:
        kind = type(layer).__name__
        if kind not in SUPPORTED:
            raise UserError(
                f"prune: structured pruning rebuilds chains of {', '.join(SUPPORTED)}; layer '{layer.name}' is a "
                f"{kind}: use method magnitude for this model"
            )
        if layer.input is not previous:
            raise UserError(f"prune: layer '{layer.name}' does not read the layer before it; structured pruning needs a chain")
        if kind == "Conv2D" and layer.data_format != "channels_last":
            raise UserError(f"prune: layer '{layer.name}' is channels_first; structured pruning needs channels_last")
        if kind == "BatchNormalization" and list(layer.axis) != [len(layer.input_shape) - 1]:
            raise UserError(f"prune: layer '{layer.name}' normalises axis {layer.axis}; structured pruning needs the last axis")
        previous = layer.output
    return layers


def target_layers(layers, config: PruneConfig, model) -> list[str]:
    """The layers to shrink: as named, or every Dense/Conv2D but the output layer (one unit per class)."""
    output = next((layer.name for layer in reversed(layers) if type(layer).__name__ in SHRINKABLE), None)
    if not config.layers:
        return [layer.name for layer in layers if type(layer).__name__ in SHRINKABLE and layer.name != output]
    names = layer_names(model, config.layers, "prune")
    for name in names:
        kind = type(model.get_layer(name)).__name__
        if name == output:
            raise UserError(f"prune: layer '{name}' produces the model's outputs, one unit per class; it is never shrunk")
        if kind not in SHRINKABLE:
            raise UserError(f"prune: structured pruning removes Dense units and Conv2D filters; layer '{name}' is a {kind}")
    return names


def group_end(layers, index: int):
    """The last channel-wise layer after layers[index]: where its units' activations are final (after BN, ReLU...)."""
    while index + 1 < len(layers) and type(layers[index + 1]).__name__ in CHANNELWISE:
        index += 1
    return layers[index]


def unit_scores(model, layers, names: list[str], config: PruneConfig, data) -> dict[str, np.ndarray]:
    """One score per output unit of each named layer; the lowest are removed."""
    if config.criterion == "magnitude":
        scores = {}
        for name in names:
            kernel = model.get_layer(name).kernel.numpy()
            scores[name] = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)  # L1 norm of each unit's weights
        return scores
    _, keras = import_tf()
    ends = [group_end(layers, layers.index(model.get_layer(name))) for name in names]
    probe = keras.Model(model.inputs, [end.output for end in ends])
    sample, _ = calibration_subset(data, config.activation_samples, seed=config.train.seed)
    outputs = probe.predict(sample, batch_size=256, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    # Mean |activation| over the sample (and every spatial position of a filter).
    return {name: np.abs(out).reshape(-1, out.shape[-1]).mean(axis=0) for name, out in zip(names, outputs, strict=True)}


def surviving_units(scores: dict[str, np.ndarray], ratio: float) -> dict[str, np.ndarray]:
    kept = {}
    for name, score in scores.items():
        units = score.size
        keep = units - round(units * ratio)
        if keep < 1:
            raise UserError(
                f"prune: ratio {ratio} would remove all {units} units of layer '{name}'; "
                "lower the ratio or leave the layer out of 'layers'"
            )
        kept[name] = np.sort(np.argsort(-score, kind="stable")[:keep])  # highest scores, in their original order
    return kept


def rebuild(model, layers, kept_units: dict[str, np.ndarray]):
    """A new model of the same layers with fewer units, holding the surviving weights."""
    _, keras = import_tf()
    x = inputs = keras.Input(shape=model.input_shape[1:], name=model.input_names[0], dtype=model.inputs[0].dtype)
    channels = None  # indices of the incoming tensor's last axis that survive; None: all of them
    for layer in layers:
        kind, config, weights = type(layer).__name__, layer.get_config(), layer.get_weights()
        if channels is not None and weights:
            if kind == "Dense":
                weights[0] = weights[0][channels, :]
            elif kind == "Conv2D":
                weights[0] = weights[0][:, :, channels, :]
            else:  # BatchNormalization: gamma, beta, moving mean and variance, one value per channel
                weights = [w[channels] for w in weights]
        if layer.name in kept_units:
            units = kept_units[layer.name]
            config[SHRINKABLE[kind]] = len(units)
            weights = [weights[0][..., units], *(w[units] for w in weights[1:])]
            next_channels = units
        elif kind in SHRINKABLE:
            next_channels = None
        elif kind == "Flatten" and channels is not None and len(x.shape) == 4:
            height, width, depth = layer.input_shape[1:]
            next_channels = np.arange(height * width * depth).reshape(height, width, depth)[..., channels].ravel()
        else:
            next_channels = channels
        clone = type(layer).from_config(config)
        x = clone(x)
        if weights:
            clone.set_weights(weights)
        channels = next_channels
    return keras.Model(inputs, x, name=model.name)


def multiply_adds(model) -> int:
    """Multiply-accumulates of one example through the Dense and Conv2D kernels: the arithmetic pruning removes."""
    total = 0
    for layer in model.layers:
        if type(layer).__name__ in SHRINKABLE:
            positions = int(np.prod(layer.output_shape[1:-1], dtype=np.int64))  # 1 for Dense, H x W for Conv2D
            total += positions * int(np.prod(layer.kernel.shape))
    return total


def prune_structure(model, config: PruneConfig, data) -> tuple[Any, dict[str, Any]]:
    layers = check_chain(model)
    names = target_layers(layers, config, model)
    if not names:
        raise UserError("prune: the model has no hidden Dense or Conv2D layer to shrink (the output layer never is)")
    kept = surviving_units(unit_scores(model, layers, names, config, data), config.ratio)
    smaller = rebuild(model, layers, kept)
    units = {
        name: {"before": int(model.get_layer(name).kernel.shape[-1]), "after": int(len(kept[name]))} for name in names
    }
    shrunk = ", ".join(f"{name} {u['before']}->{u['after']}" for name, u in units.items())
    log(f"prune: {shrunk}; {model.count_params():,} -> {smaller.count_params():,} parameters")
    train = config.fine_tuning()
    fit(smaller, data, train, label="prune")
    details = {
        "ratio": config.ratio,
        "criterion": config.criterion,
        "units": units,
        "params_before": int(model.count_params()),
        "params_after": int(smaller.count_params()),
        "multiply_adds_before": multiply_adds(model),
        "multiply_adds_after": multiply_adds(smaller),
        "epochs": train.epochs,
        "learning_rate": train.learning_rate,
    }
    return smaller, details
