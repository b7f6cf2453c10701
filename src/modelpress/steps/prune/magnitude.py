"""Magnitude pruning with tensorflow-model-optimization: wrap the chosen layers in PruneLowMagnitude, fine-tune with
UpdatePruningStep (the sparsity follows PolynomialDecay or ConstantSparsity, or an N:M pattern is fixed at the first
step), then strip the wrappers so the saved model is a plain Keras model with zeros in its kernels."""

from __future__ import annotations

import math
from typing import Any

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.ml.compression import layer_names, leaf_layers_by_name, wrap_layers
from modelpress.ml.training import fit
from modelpress.steps.prune.config import PruneConfig

# N:M groups run along a kernel's input channels (tfmot's layout, the one sparse tensor cores use).
PATTERN_LAYER_TYPES = ("Dense", "Conv2D")


def pattern_misfit(layer, group: int) -> str | None:
    """Why an N:M pattern cannot apply to `layer`, or None when it can."""
    kind = type(layer).__name__
    if kind not in PATTERN_LAYER_TYPES:
        return f"it is a {kind} (N:M patterns apply to {', '.join(PATTERN_LAYER_TYPES)})"
    inputs = layer.kernel.shape[-2]
    if inputs % group:
        return f"its {inputs} input channels are not a multiple of the group size {group}"
    return None


def pattern_layers(model, names: list[str], group: int, explicit: bool) -> tuple[list[str], dict[str, str]]:
    """The layers an N:M pattern applies to, and why the others cannot take it. A layer the user named that cannot
    take it is an error; by default such layers stay dense (e.g. a first convolution over 1-channel images)."""
    layers = leaf_layers_by_name(model)
    misfits = {name: reason for name in names if (reason := pattern_misfit(layers[name], group))}
    if explicit and misfits:
        name, reason = next(iter(misfits.items()))
        raise UserError(f"prune: pattern cannot apply to layer '{name}': {reason}; remove it from 'layers'")
    chosen = [name for name in names if name not in misfits]
    if not chosen:
        raise UserError(f"prune: no layer can take a pattern with groups of {group}: " + "; ".join(f"{n}: {r}" for n, r in misfits.items()))
    return chosen, misfits


def prune_magnitude(model, config: PruneConfig, data) -> tuple[Any, dict[str, Any]]:
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    # Early stopping would restore weights (and masks) from an epoch before the target sparsity was reached.
    train = config.fine_tuning().model_copy(update={"early_stopping_patience": None})
    steps = math.ceil(data.count("train") / train.batch_size) * train.epochs
    frequency = max(1, steps // (2 * train.epochs))  # masks updated twice an epoch
    names = layer_names(model, config.layers, "prune")
    details: dict[str, Any] = {"epochs": train.epochs, "learning_rate": train.learning_rate}
    left_dense: dict[str, str] = {}  # layer -> why it keeps all its weights
    if config.pattern:
        kept, group = config.kept_and_group
        names, left_dense = pattern_layers(model, names, group, explicit=bool(config.layers))
        schedule = sparsity.ConstantSparsity(1 - kept / group, begin_step=0)  # unused: the pattern mask is set at step 1
        wrapper_options = {"sparsity_m_by_n": (group - kept, group)}
        details.update(pattern=config.pattern)
    elif config.schedule == "polynomial":
        # Reach the target two thirds of the way through, then fine-tune with the final masks.
        end_step = max(frequency, steps * 2 // 3 // frequency * frequency)
        schedule = sparsity.PolynomialDecay(0.0, config.sparsity, begin_step=0, end_step=end_step, frequency=frequency)
        wrapper_options = {}
        details.update(schedule="polynomial", target_sparsity=config.sparsity, end_step=end_step, frequency=frequency)
    else:
        schedule = sparsity.ConstantSparsity(config.sparsity, begin_step=0, frequency=frequency)
        wrapper_options = {}
        details.update(schedule="constant", target_sparsity=config.sparsity, frequency=frequency)

    def wrap(layer):
        if layer.name not in names:
            return layer
        try:
            wrapper = sparsity.prune_low_magnitude(layer, pruning_schedule=schedule, **wrapper_options)
        except ValueError as exc:
            raise UserError(f"prune: tfmot cannot prune layer '{layer.name}' ({type(layer).__name__}): {exc}") from None
        if not wrapper.layer.get_prunable_weights():  # e.g. DepthwiseConv2D: tfmot keeps its kernel whole
            reason = f"tfmot prunes no weights of a {type(layer).__name__}"
            if layer.name in (config.layers or []):
                raise UserError(f"prune: {reason} (layer '{layer.name}'); leave it out of 'layers'")
            left_dense[layer.name] = reason
            return layer
        pruned.append(layer.name)
        return wrapper

    pruned: list[str] = []
    wrapped = wrap_layers(model, wrap)
    for name, reason in left_dense.items():
        log(f"prune: layer {name} stays dense: {reason}")
    log(f"prune: fine-tuning {len(pruned)} wrapped layers for {train.epochs} epochs ({steps} steps)")
    fit(wrapped, data, train, label="prune", callbacks=[sparsity.UpdatePruningStep()])
    details.update(pruned_layers=pruned, left_dense=left_dense)
    return sparsity.strip_pruning(wrapped), details
