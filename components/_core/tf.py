"""The one place TensorFlow is imported, with the settings tfmot needs (legacy tf-keras) and quiet logs."""

from __future__ import annotations

import os


def import_tf():
    """(tensorflow, keras) with tf-keras 2.x as keras: tensorflow-model-optimization works only with it."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .errors import require

    tf = require("tensorflow", "tf")
    import tf_keras as keras

    tf.get_logger().setLevel("ERROR")
    return tf, keras


def load_keras_model(path, custom_objects: dict | None = None):
    """Load a Keras model saved by a step (`model.keras`), with tfmot's wrappers registered."""
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    # QAT models keep their QuantizeWrapper layers (the converter needs them); pruning/clustering are stripped.
    with tfmot.quantization.keras.quantize_scope(), keras.utils.custom_object_scope(custom_objects or {}):
        return keras.models.load_model(path, compile=False)
