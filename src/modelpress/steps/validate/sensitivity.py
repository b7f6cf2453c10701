"""Per-layer sensitivity of a rejected artifact: which layers, each compressed alone the way the artifact was made,
cost the most accuracy.

The parent Keras model (what the artifact was made from) is edited one layer at a time, NumPy on its weights, no
fine-tuning: quantization rounds the layer's kernels to the artifact's integer grid (per output channel, weights
only), magnitude pruning zeroes its smallest weights at the artifact's sparsity (or N:M pattern), structured pruning
zeroes its weakest units at the artifact's ratio, clustering gives its kernels the artifact's number of shared values.
Each edited model is scored on a bounded sample of the validation split (the test split when there is none) against
the unedited parent; the layers are listed worst first, with all of them edited at once for comparison with the
artifact's own drop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelpress.common.errors import UserError
from modelpress.contract.compression import EvaluationSpec
from modelpress.contract.formats import FORMATS
from modelpress.contract.training import ModelSpec
from modelpress.io.artifacts import ArtifactMeta, open_artifact, read_blessing
from modelpress.ml.compression import kernel_weights, leaf_layers, weight_name
from modelpress.ml.keras_artifact import load_keras_artifact

# Lloyd iterations of the 1-D k-means that stands in for tfmot's clustering (it converges in a few on one axis).
KMEANS_ITERATIONS = 20


@dataclass(frozen=True)
class LayerEdit:
    """What the artifact's step did to a layer, to be done to one layer of its parent at a time."""

    technique: str  # quantization, pruning or clustering
    description: str  # what is done to each layer, for the report
    edit: Callable[[Any], list[np.ndarray]]  # layer -> its weights, edited
    layers: tuple[str, ...] | None = None  # the layers the step acted on; None: every layer with a kernel


def edit_kernels(layer, change: Callable[[np.ndarray, str], np.ndarray]) -> list[np.ndarray]:
    """The layer's weights with `change(values, short name)` applied to each kernel (kernel, depthwise_kernel)."""
    kernels = {id(w) for w in kernel_weights(layer)}
    return [
        change(values, weight_name(weight)).astype(values.dtype) if id(weight) in kernels else values
        for weight, values in zip(layer.weights, layer.get_weights(), strict=True)
    ]


def fake_quantized(kernel: np.ndarray, bits: int, depthwise: bool) -> np.ndarray:
    """Symmetric integer rounding with one scale per output channel (a depthwise kernel's channels are its last two
    axes), as the TFLite and OpenVINO converters quantize weights."""
    channel_axes = {kernel.ndim - 1, kernel.ndim - 2} if depthwise else {kernel.ndim - 1}
    reduced = tuple(axis for axis in range(kernel.ndim) if axis not in channel_axes)
    levels = 2 ** (bits - 1) - 1
    scale = np.max(np.abs(kernel), axis=reduced, keepdims=True) / levels
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(kernel / scale), -levels, levels) * scale


def magnitude_pruned(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """The `sparsity` share of the kernel with the smallest |weight| set to zero (tfmot's magnitude criterion)."""
    pruned = kernel.copy().ravel()
    pruned[np.argsort(np.abs(pruned), kind="stable")[: round(pruned.size * sparsity)]] = 0
    return pruned.reshape(kernel.shape)


def pattern_pruned(kernel: np.ndarray, kept: int, group: int) -> np.ndarray:
    """At most `kept` non-zeros in every `group` consecutive input weights of each output (tfmot's N:M layout)."""
    rows = np.moveaxis(kernel, -2, -1)  # input channels last
    groups = rows.reshape(*rows.shape[:-1], rows.shape[-1] // group, group)
    smallest = np.argsort(np.abs(groups), axis=-1, kind="stable")[..., : group - kept]
    mask = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(mask, smallest, False, axis=-1)
    return np.moveaxis((groups * mask).reshape(rows.shape), -1, -2)


def clustered(kernel: np.ndarray, clusters: int, keep_zeros: bool) -> np.ndarray:
    """Every weight replaced by the nearest of `clusters` shared values (1-D k-means from evenly spaced quantiles);
    with `keep_zeros`, zero weights stay zero and only the others are clustered (tfmot's preserve_sparsity)."""
    chosen = kernel != 0 if keep_zeros else np.ones(kernel.shape, dtype=bool)
    values = kernel[chosen].astype(np.float64)
    if values.size == 0:
        return kernel
    centroids = np.quantile(values, (np.arange(clusters) + 0.5) / clusters)
    for _ in range(KMEANS_ITERATIONS):
        nearest = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
        counts = np.bincount(nearest, minlength=clusters)
        sums = np.bincount(nearest, weights=values, minlength=clusters)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)  # sorted on one axis: stays sorted
    result = kernel.copy()
    result[chosen] = centroids[np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)]
    return result


def units_removed(layer, ratio: float) -> list[np.ndarray]:
    """The layer's weights with its `ratio` share of output units of least kernel L1 norm silenced: their kernel
    columns and biases zeroed, so they add nothing downstream, as if removed."""
    weights = dict(zip((weight_name(w) for w in layer.weights), layer.get_weights(), strict=True))
    scores = np.abs(weights["kernel"]).reshape(-1, weights["kernel"].shape[-1]).sum(axis=0)
    removed = np.argsort(scores, kind="stable")[: round(scores.size * ratio)]
    for name in ("kernel", "bias"):
        if name in weights:
            weights[name] = weights[name].copy()
            weights[name][..., removed] = 0
    return list(weights.values())


def quantization(bits: int) -> LayerEdit:
    return LayerEdit(
        "quantization",
        f"kernels rounded to int{bits}, one scale per output channel (weights only; activations stay float)",
        lambda layer: edit_kernels(layer, lambda kernel, name: fake_quantized(kernel, bits, name == "depthwise_kernel")),
    )


def converted_edit(meta: ArtifactMeta) -> LayerEdit | str:
    """A conversion's edit: its integer weights (a LiteRT recipe's narrowest), or why a float format has none."""
    if FORMATS[meta.format].keeps_float:
        return (
            f"{meta.format} keeps float arithmetic: the conversion compresses no layer, so a failed gate comes from its "
            "parent (see the parent's validation)"
        )
    recipe = meta.details.get("recipe")
    return quantization(min(int(rule["weights"].removeprefix("int")) for rule in recipe) if recipe else 8)


def pruning_edit(details: dict[str, Any]) -> LayerEdit | str:
    pruned = tuple(details.get("pruned_layers", ())) or None
    if details.get("pattern"):
        kept, group = (int(n) for n in details["pattern"].split(":"))
        return LayerEdit(
            "pruning",
            f"{details['pattern']} pattern: the {group - kept} smallest of every {group} input weights set to zero",
            lambda layer: edit_kernels(layer, lambda kernel, _: pattern_pruned(kernel, kept, group)),
            pruned,
        )
    if "target_sparsity" in details:  # magnitude and lottery
        sparsity = details["target_sparsity"]
        return LayerEdit(
            "pruning",
            f"the {sparsity:.0%} smallest kernel weights set to zero",
            lambda layer: edit_kernels(layer, lambda kernel, _: magnitude_pruned(kernel, sparsity)),
            pruned,
        )
    if "ratio" in details and "units" in details:  # structured
        ratio = details["ratio"]
        return LayerEdit(
            "pruning",
            f"the {ratio:.0%} output units of least kernel L1 norm removed",
            lambda layer: units_removed(layer, ratio),
            tuple(details["units"]),
        )
    return f"prune method {details.get('method')} has no layer-by-layer counterpart here"


def technique_edit(meta: ArtifactMeta) -> LayerEdit | str:
    """How the artifact's step changed each layer of its parent, or one line saying why no per-layer edit does."""
    details = meta.details
    if meta.step == "convert":
        return converted_edit(meta)
    if meta.step == "quantize":  # quantization-aware training: tfmot's default 8-bit scheme
        return quantization(8)
    if meta.step == "prune":
        return pruning_edit(details)
    if meta.step == "cluster":
        clusters, keep_zeros = details["clusters"], bool(details.get("preserve_sparsity"))
        return LayerEdit(
            "clustering",
            f"kernels clustered to {clusters} shared values{' (zeros kept)' if keep_zeros else ''}",
            lambda layer: edit_kernels(layer, lambda kernel, _: clustered(kernel, clusters, keep_zeros)),
            tuple(details.get("clustered_layers", ())) or None,
        )
    if meta.step == "train":
        return "the trained model is compressed from nothing: no layer's compression explains its failed gate"
    if meta.step == "distill":
        return "a distilled student has layers of its own, none a compressed copy of a teacher's layer"
    return f"step {meta.step} has no layer-by-layer counterpart here"


def measure_layers(model, change: LayerEdit, x: np.ndarray, y: np.ndarray, batch_size: int, max_layers: int) -> dict:
    """Accuracy drop and changed predictions with each layer edited alone (the largest `max_layers` layers), and
    with every edited layer at once; the model's weights are put back after each."""

    def classes() -> np.ndarray:
        return np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=1)

    reference = classes()
    reference_accuracy = float(np.mean(reference == y))
    candidates = [
        layer for layer in leaf_layers(model)
        if kernel_weights(layer) and (change.layers is None or layer.name in change.layers)
    ]

    def params(layer) -> int:
        return int(sum(np.prod(w.shape) for w in kernel_weights(layer)))

    def score(edited: list) -> dict:
        originals = [layer.get_weights() for layer in edited]
        for layer in edited:
            layer.set_weights(change.edit(layer))
        predicted = classes()
        for layer, weights in zip(edited, originals, strict=True):
            layer.set_weights(weights)
        accuracy = float(np.mean(predicted == y))
        return {"accuracy": accuracy, "drop": reference_accuracy - accuracy, "changed": float(np.mean(predicted != reference))}

    measured = sorted(candidates, key=params, reverse=True)[:max_layers]
    layers = [{"layer": layer.name, "type": type(layer).__name__, "params": params(layer), **score([layer])} for layer in measured]
    layers.sort(key=lambda row: (-row["drop"], -row["changed"]))
    return {
        "reference_accuracy": reference_accuracy,
        "together": {"layers": len(candidates), **score(candidates)},
        "layers_measured": len(measured),
        "layers": layers,
    }


def sample_rows(data, rows: int) -> tuple[str, np.ndarray, np.ndarray]:
    """The split scored on (validation, else test) and its first `rows` examples."""
    split = "val" if data.count("val") else "test"
    x, y = data.head(split, rows)
    return split, np.asarray(x), np.asarray(y)


def layer_sensitivity(
    meta: ArtifactMeta, parent_validation: str | None, data, evaluation: EvaluationSpec, model_spec: ModelSpec | None
) -> dict:
    """sensitivity.json of a rejected artifact: the layers worst first, or `computed: false` with the reason."""
    change = technique_edit(meta)
    if isinstance(change, str):
        return {"computed": False, "reason": change}
    if parent_validation is None:
        return {"computed": False, "reason": "validate was given no parent validation (input parent), so there is no parent model to edit"}
    try:
        parent, _ = read_blessing(parent_validation)
        with open_artifact(parent.artifact) as (folder, parent_meta):
            model = load_keras_artifact(folder, parent_meta, parent.artifact, "validate", model_spec)
    except UserError as exc:
        return {"computed": False, "reason": f"the parent model cannot be loaded here: {exc}"}
    if any(type(layer).__name__.startswith("QuantizeWrapper") for layer in model.layers):
        return {
            "computed": False,
            "reason": f"the parent {parent.name} is quantization-aware: its layers already compute in int8, and "
            f"{parent.name}'s own validation measures what quantizing them cost",
        }
    split, x, y = sample_rows(data, evaluation.sensitivity_rows)
    found = measure_layers(model, change, x, y, evaluation.batch_size, evaluation.sensitivity_layers)
    return {
        "computed": True,
        "technique": change.technique,
        "edit": f"{change.description}; each layer alone, without fine-tuning",
        "parent": {"name": parent.name, "uri": parent.artifact},
        "split": split,
        "rows": int(len(y)),
        **found,
    }
