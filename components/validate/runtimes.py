"""Run an artifact in its own runtime: one runner per artifact format family.

A runner takes float32 inputs in the data's layout and returns class probabilities (or scores) as numpy.
The conversion issue adds TFLite, OpenVINO, ONNX Runtime and TensorRT runners to RUNNERS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._core.artifacts import ArtifactMeta
from .._core.errors import UserError
from .._core.tf import import_tf


class SavedModelRunner:
    """The SavedModel's serving signature in TensorFlow: what TF Serving on CPU runs."""

    runtime = "tensorflow"

    def __init__(self, model_path: Path):
        tf, _ = import_tf()
        loaded = tf.saved_model.load(str(model_path))
        if "serving_default" not in loaded.signatures:
            raise UserError(f"{model_path} has no serving_default signature; export it with a serving signature")
        self._keep = loaded
        self._function = loaded.signatures["serving_default"]
        (self._input_name,) = list(self._function.structured_input_signature[1].keys())
        self._tf = tf

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._function(**{self._input_name: self._tf.constant(batch, dtype=self._tf.float32)})
        return next(iter(outputs.values())).numpy()


RUNNERS: dict[str, Callable[[Path, ArtifactMeta], object]] = {
    "saved_model": lambda folder, meta: SavedModelRunner(folder / meta.model_path),
}


def load_runner(folder: Path, meta: ArtifactMeta):
    """The runner for an artifact's format: the exact format first, then its family (the text before '_')."""
    factory = RUNNERS.get(meta.format) or RUNNERS.get(meta.format.split("_")[0])
    if factory is None:
        raise UserError(f"no runtime to validate format '{meta.format}'; known: {', '.join(sorted(RUNNERS))}")
    return factory(folder, meta)
