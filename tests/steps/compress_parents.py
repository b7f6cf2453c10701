"""Tiny parent artifacts for the compression step tests: a trained MLP and a copy pruned with tfmot directly (so
these tests do not depend on the prune step), a builder of an MLP with a nested model, and a reader of an artifact's
kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelpress.common.tf import import_tf, load_keras_model
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io.data import load_dataset
from modelpress.ml.compression import kernel_weights, parent_model, save_compressed, wrapped_name
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig

DATA = {"source": "digits"}
TINY_TRAIN = TrainSpec(epochs=3, batch_size=64)


def train_tiny(uri: str) -> str:
    train.run(TrainConfig(model=ModelSpec(zoo="mlp", params={"hidden": [32]}), data=DATA, train=TINY_TRAIN), {}, uri)
    return uri


def prune_with_tfmot(parent: str, uri: str, sparsity: float = 0.5) -> str:
    """Half of every kernel set to zero by tfmot's magnitude pruning, stripped and saved as an artifact."""
    import tensorflow_model_optimization as tfmot

    _, keras = import_tf()
    data = load_dataset(DigitsData(source="digits"))
    with parent_model(parent, "prune", None) as (model, _, _):  # a zoo model: no module to import
        pass
    pruning = tfmot.sparsity.keras
    wrapped = pruning.prune_low_magnitude(model, pruning_schedule=pruning.ConstantSparsity(sparsity, 0, frequency=1))
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    wrapped.fit(data.x_train, data.y_train, epochs=1, batch_size=64, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    config = TrainConfig(model=ModelSpec(zoo="mlp"), data=DATA)
    save_compressed(pruning.strip_pruning(wrapped), technique="prune", config=config, parent_uri=parent, data=data, output=uri, overwrite=False)
    return uri


def nested_mlp(input_shape, num_classes):
    """A model holding another model, like mobilenet_v2's backbone: compression must reach the layers inside it."""
    _, keras = import_tf()
    features = keras.Input((int(np.prod(input_shape)),))
    hidden = keras.layers.Dense(24, activation="relu", name="inner_1")(features)
    backbone = keras.Model(features, keras.layers.Dense(16, activation="relu", name="inner_2")(hidden), name="backbone")
    inputs = keras.Input(input_shape, name="input")
    logits = keras.layers.Dense(num_classes, name="logits")(backbone(keras.layers.Flatten(name="flatten")(inputs)))
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))


def kernels(uri: str) -> dict[str, np.ndarray]:
    """Every kernel of an artifact's Keras model by layer name (a QAT wrapper's kernel under the wrapped layer's name)."""
    model = load_keras_model(Path(uri) / "model.h5")
    return {wrapped_name(layer): w.numpy() for layer in model.layers for w in kernel_weights(layer)}
