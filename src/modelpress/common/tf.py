"""The one place TensorFlow is imported, with the settings tfmot needs (legacy tf-keras) and quiet logs."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile


def import_tf():
    """(tensorflow, keras) with tf-keras 2.x as keras: tensorflow-model-optimization works only with it."""
    tf = import_tensorflow()
    from modelpress.common.errors import require

    return tf, require("tf_keras", "tf")


def import_tensorflow():
    """TensorFlow alone (reading a SavedModel needs no Keras: push and deploy run in the image without it)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from modelpress.common.errors import require

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _quiet_native_startup():
        tf = require("tensorflow", "tf")
        tf.config.list_physical_devices("GPU")  # device discovery logs its "no CUDA driver" lines now, filtered
    tf.get_logger().setLevel("ERROR")
    return tf


# Lines TensorFlow's native code prints at start-up before its log level applies (absl is not initialised yet).
_STARTUP_NOISE = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} .*(port\.cc|cudart_stub|cuda_platform|cpu_feature_guard|cuda_executor)|To enable the following instructions|$)")


@contextlib.contextmanager
def _quiet_native_startup():
    """Capture fd 2 while TensorFlow loads; replay everything but the known start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if not _STARTUP_NOISE.match(line):
                    print(line, file=sys.stderr)


def load_keras_model(path, custom_objects: dict | None = None):
    """Load a Keras model file (`model.h5`), with tfmot's wrappers registered."""
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    # QAT models keep their QuantizeWrapper layers (the converter needs them); the steps strip pruning and clustering
    # wrappers before saving, but a model saved by other code may keep them.
    with (
        tfmot.quantization.keras.quantize_scope(),
        tfmot.sparsity.keras.prune_scope(),
        tfmot.clustering.keras.cluster_scope(),
        keras.utils.custom_object_scope(custom_objects or {}),
    ):
        return keras.models.load_model(path, compile=False)
