"""What every compression step (prune, cluster, quantize, distill) shares: open the parent Keras model, measure its
weights layer by layer, and save the result as an artifact whose metrics and details say what the step did."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io import storage
from modelpress.io.artifacts import ArtifactMeta, open_artifact
from modelpress.ml.keras_artifact import load_keras_artifact, save_keras_artifact


def weight_name(weight) -> str:
    """A weight's name inside its layer: 'kernel', 'depthwise_kernel', 'bias', ..."""
    return weight.name.split("/")[-1].split(":")[0]


def kernel_weights(layer) -> list:
    """The weights compression acts on: kernels (Dense, Conv), not biases or normalisation statistics."""
    return [w for w in layer.weights if weight_name(w) in ("kernel", "depthwise_kernel")]


def all_layers(model) -> Iterator:
    """Every layer, each nested model (e.g. mobilenet_v2's backbone) followed by its own layers."""
    from modelpress.common.tf import import_tf

    _, keras = import_tf()
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def leaf_layers(model) -> Iterator:
    """Every layer, the layers of a nested model (e.g. mobilenet_v2's backbone) in place of the model itself."""
    from modelpress.common.tf import import_tf

    _, keras = import_tf()
    return (layer for layer in all_layers(model) if not isinstance(layer, keras.Model))


def leaf_layers_by_name(model) -> dict[str, Any]:
    """Layers looked up by name inside nested models too (Model.get_layer sees only the top level)."""
    return {layer.name: layer for layer in leaf_layers(model)}


def wrap_layers(model, wrap: Callable[[Any], Any]):
    """A copy of the model with `wrap(layer)` in place of each layer, inside nested models too. tfmot's wrappers take
    single layers: given a nested model whole, tfmot wraps every layer in it, not the chosen ones."""
    from modelpress.common.tf import import_tf

    _, keras = import_tf()

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        return wrap(layer)

    return keras.models.clone_model(model, clone_function=clone)


def weight_stats(model) -> dict[str, Any]:
    """Per layer with a kernel: parameters, share of exact zeros, number of distinct values; and the totals.

    A quantization-aware model's QuantizeWrapper holds the real float kernel; it is reported under the wrapped
    layer's own name (`dense_1`, not `quant_dense_1`), so parent and child compare layer by layer."""
    layers, zeros, total = {}, 0, 0
    for layer in leaf_layers(model):
        for weight in kernel_weights(layer):
            values = np.asarray(weight.numpy())
            layer_zeros = int(np.count_nonzero(values == 0))
            layers[wrapped_name(layer)] = {
                "params": int(values.size),
                "sparsity": round(layer_zeros / values.size, 4),
                "unique": int(np.unique(values).size),
            }
            zeros, total = zeros + layer_zeros, total + values.size
    return {"layers": layers, "kernel_params": int(total), "sparsity": round(zeros / total, 4) if total else 0.0}


def wrapped_name(layer) -> str:
    """The name of the layer a tfmot wrapper (QuantizeWrapper, ClusterWeights, PruneLowMagnitude) holds, else its own."""
    from modelpress.common.tf import import_tf

    _, keras = import_tf()
    return layer.layer.name if isinstance(layer, keras.layers.Wrapper) else layer.name


def fine_tune(model, data, train: TrainSpec, epochs: int, learning_rate: float, label: str):
    """Fit a model wrapped for compression a few epochs at a low learning rate, with the workflow's batch size,
    optimizer and seed (train.epochs and train.learning_rate are for training from scratch)."""
    from modelpress.common.tf import import_tf
    from modelpress.ml.training import fit

    _, keras = import_tf()
    keras.utils.set_random_seed(train.seed)
    return fit(model, data, train.model_copy(update={"epochs": epochs, "learning_rate": learning_rate}), label=label)


def refuse_quantized(model, technique: str) -> None:
    """Compression acts on float kernels: a quantization-aware parent means quantize was not the last Keras step."""
    wrapped = [layer.name for layer in model.layers if type(layer).__name__.startswith("QuantizeWrapper")]
    if wrapped:
        raise UserError(
            f"{technique} needs a float model but the parent is quantization-aware ({wrapped[0]}); "
            "quantize must be the last Keras step in compress"
        )


def layer_names(model, names: list[str] | None, what: str) -> list[str]:
    """The layers with a kernel to act on, inside nested models too: all of them by default; a named nested model
    stands for its layers. An unknown or kernel-less name is an error listing the layers that have kernels."""
    from modelpress.common.tf import import_tf

    _, keras = import_tf()
    known = [layer.name for layer in leaf_layers(model) if kernel_weights(layer)]
    if not names:
        return known
    by_name = {layer.name: layer for layer in all_layers(model)}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise UserError(f"{what}: no layer named {', '.join(map(repr, unknown))} in the model; layers with weights: {', '.join(known)}")

    def kernel_layers(layer) -> list[str]:
        inner = leaf_layers(layer) if isinstance(layer, keras.Model) else [layer]
        return [each.name for each in inner if kernel_weights(each)]

    chosen = {name: kernel_layers(by_name[name]) for name in names}
    weightless = [name for name, layers in chosen.items() if not layers]
    if weightless:
        raise UserError(f"{what}: layer {', '.join(map(repr, weightless))} has no kernel to act on; layers with weights: {', '.join(known)}")
    return list(dict.fromkeys(inner for layers in chosen.values() for inner in layers))


@contextlib.contextmanager
def parent_model(uri: str, technique: str, model: ModelSpec | None) -> Iterator[tuple[Any, ArtifactMeta, Any]]:
    """The parent artifact's Keras model (training wrappers stripped by the step that saved it), its metadata and the
    local folder it was read from (e.g. for the initial weights a lottery-ticket rewind needs); `model` is the
    workflow's model section (see load_keras_artifact)."""
    with open_artifact(uri) as (folder, meta):
        yield load_keras_artifact(folder, meta, uri, technique, model), meta, folder


def save_compressed(
    model,
    *,
    technique: str,
    config,
    parent_uri: str,
    data,
    output: str,
    overwrite: bool,
    metrics: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    calibration_hash: str | None = None,
) -> dict[str, Any]:
    """Measure test accuracy and weights of an already-stripped model, save it, and return the step result."""
    from modelpress.ml.training import test_accuracy

    accuracy = test_accuracy(model, data)
    stats = weight_stats(model)
    log(f"{technique}: test accuracy {accuracy:.4f}, {model.count_params():,} parameters, kernel sparsity {stats['sparsity']:.1%}")
    with storage.staged_output(output, overwrite=overwrite) as folder:
        meta = save_keras_artifact(
            model,
            folder,
            step=technique,
            config=config,
            parent=parent_uri,
            data_hash=data.hash,
            metrics={"accuracy": accuracy, "sparsity": stats["sparsity"], **(metrics or {})},
            details={"weights": stats, **(details or {})},
            calibration_hash=calibration_hash,
        )
    return {"uri": output, "format": meta.format, "metrics": meta.metrics}
