"""Writing a Keras model as an artifact: `model.h5` for later steps, `saved_model/` for serving and conversion."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import ArtifactMeta, finish
from .spec import spec_hash

KERAS_FILE = "model.h5"  # HDF5: the Keras format that can leave the optimizer out
SAVED_MODEL_DIR = "saved_model"
INITIAL_WEIGHTS_FILE = "initial.weights.h5"


def count_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights if "optimizer" not in w.name))


def save_keras_artifact(
    model,
    folder: Path,
    *,
    step: str,
    config,
    parent: str | None,
    data_hash: str | None,
    metrics: dict[str, Any],
    details: dict[str, Any] | None = None,
    calibration_hash: str | None = None,
) -> ArtifactMeta:
    """Save `model` (already stripped of training-only wrappers) into a staged artifact folder and finish it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy", category=UserWarning)
        model.save(folder / KERAS_FILE, include_optimizer=False)
    model.save(folder / SAVED_MODEL_DIR, save_format="tf", include_optimizer=False)
    meta = ArtifactMeta(
        format="saved_model",
        step=step,
        model_path=SAVED_MODEL_DIR,
        parent=parent,
        config_hash=spec_hash(config),
        data_hash=data_hash,
        calibration_hash=calibration_hash,
        metrics={"params": count_params(model), **metrics},
        details=details or {},
    )
    return finish(folder, meta)
