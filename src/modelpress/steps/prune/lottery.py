"""Lottery-ticket rewind (Frankle & Carbin): from the trained parent, prune the smallest-magnitude weights of each
layer, reset the survivors (and every bias) to their values before training, retrain with the pruned weights held at
zero, and repeat. Each round removes the same share of the weights still alive, so after `rounds` rounds the target
sparsity is reached; each round's test accuracy is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.ml.compression import kernel_weights, layer_names, leaf_layers_by_name
from modelpress.ml.keras_artifact import INITIAL_WEIGHTS_FILE
from modelpress.ml.training import fit, test_accuracy
from modelpress.steps.prune.config import PruneConfig


def magnitude_mask(kernel: np.ndarray, mask: np.ndarray, sparsity: float) -> np.ndarray:
    """A mask zeroing the `sparsity` share of the kernel with the smallest |weight|; pruned weights stay pruned."""
    score = np.where(mask > 0, np.abs(kernel), -1.0).ravel()  # already pruned: always ranked lowest
    pruned = np.argsort(score, kind="stable")[: round(kernel.size * sparsity)]
    new = np.ones(kernel.size, dtype=kernel.dtype)
    new[pruned] = 0
    return new.reshape(kernel.shape)


def initial_weights(model, folder: Path) -> list[np.ndarray]:
    """The parent's weights before training, which the train step keeps next to the model."""
    _, keras = import_tf()
    path = folder / INITIAL_WEIGHTS_FILE
    if not path.exists():
        raise UserError(
            f"prune: method lottery rewinds to the weights before training ({INITIAL_WEIGHTS_FILE}), which only a train "
            "artifact holds; put the lottery prune first in compress, right after train"
        )
    untrained = keras.models.clone_model(model)
    try:
        untrained.load_weights(path)
    except ValueError as exc:
        raise UserError(f"prune: the initial weights do not fit this model ({exc}); use a train artifact as input") from None
    return untrained.get_weights()


def chosen_kernels(model, names: list[str]) -> list:
    layers = leaf_layers_by_name(model)
    return [kernel for name in names for kernel in kernel_weights(layers[name])]


def keep_masks(masked: list[tuple[Any, np.ndarray]]):
    """A callback that holds pruned weights at zero after every optimizer step."""
    _, keras = import_tf()

    class KeepMasks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for kernel, mask in masked:
                kernel.assign(kernel * mask)

    return KeepMasks()


def find_ticket(model, folder: Path, config: PruneConfig, data) -> tuple[Any, dict[str, Any]]:
    names = layer_names(model, config.layers, "prune")
    rewind = initial_weights(model, folder)
    train = config.fine_tuning()
    keep_per_round = (1 - config.sparsity) ** (1 / config.rounds)
    # Each kernel is pruned on its own (layer-wise, as in the paper).
    kernels = chosen_kernels(model, names)
    masks = [np.ones(kernel.shape, dtype=kernel.dtype.as_numpy_dtype) for kernel in kernels]
    rounds = [{"round": 0, "sparsity": 0.0, "accuracy": test_accuracy(model, data)}]  # the trained, dense parent
    for number in range(1, config.rounds + 1):
        sparsity = 1 - keep_per_round**number
        masks = [magnitude_mask(kernel.numpy(), mask, sparsity) for kernel, mask in zip(kernels, masks, strict=True)]
        model.set_weights(rewind)
        for kernel, mask in zip(kernels, masks, strict=True):
            kernel.assign(kernel * mask)
        log(f"prune: lottery round {number}/{config.rounds}: sparsity {sparsity:.1%}, rewound to the initial weights")
        history = fit(
            model, data, train, label=f"lottery round {number}", callbacks=[keep_masks(list(zip(kernels, masks, strict=True)))]
        )
        accuracy = test_accuracy(model, data)
        zeros = sum(int(np.count_nonzero(mask == 0)) for mask in masks)
        size = sum(mask.size for mask in masks)
        rounds.append(
            {"round": number, "sparsity": round(zeros / size, 4), "accuracy": accuracy, "epochs": len(history.history["loss"])}
        )
        log(f"prune: lottery round {number}: test accuracy {accuracy:.4f}")
    details: dict[str, Any] = {
        "target_sparsity": config.sparsity,
        "rounds": rounds,
        "pruned_per_round": round(1 - keep_per_round, 4),
        "pruned_layers": names,
        "learning_rate": train.learning_rate,
    }
    if config.random_init_control:
        details["random_init_accuracy"] = train_random_init(model, names, masks, train, data)
    return model, details


def train_random_init(model, names: list[str], masks: list[np.ndarray], train, data) -> float:
    """The paper's control: the ticket's mask on freshly drawn weights, trained the same way. A ticket that beats it
    owes its accuracy to the initial values it was rewound to, not to the mask alone."""
    _, keras = import_tf()
    control = keras.models.clone_model(model)  # same layers, new weights from their initialisers
    kernels = chosen_kernels(control, names)
    for kernel, mask in zip(kernels, masks, strict=True):
        kernel.assign(kernel * mask)
    fit(control, data, train, label="random-init control", callbacks=[keep_masks(list(zip(kernels, masks, strict=True)))])
    accuracy = test_accuracy(control, data)
    log(f"prune: random-init control with the final mask: test accuracy {accuracy:.4f}")
    return accuracy
