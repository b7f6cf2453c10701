"""Keras model artifacts: `model.h5` for later steps, `saved_model/` for serving and conversion; written here, and
read back here by every step that takes one (compression steps, convert)."""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf, load_keras_model
from modelpress.contract.schema import StepConfig, spec_hash
from modelpress.contract.training import ModelSpec
from modelpress.io.artifacts import ArtifactMeta, finish

KERAS_FILE = "model.h5"  # HDF5: the Keras format that can leave the optimizer out
SAVED_MODEL_DIR = "saved_model"
INITIAL_WEIGHTS_FILE = "initial.weights.h5"
# details key: the model's layer classes that Keras and tfmot do not define (a builder's own), by the name the saved
# config gives them ('package>Class' when registered, else 'Class'), each with the 'module:Class' to import it from.
CUSTOM_LAYERS = "custom_layers"
BUILT_IN_PACKAGES = ("tf_keras", "keras", "tensorflow", "tensorflow_model_optimization")
# Keras's refusal of a class it does not know: "Unknown layer: 'custom_builder>Scale'. Please ensure ..."
UNKNOWN_CLASS = re.compile(r"Unknown (?P<kind>[\w ]+): '(?P<name>[^']+)'")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class KerasInputConfig(StepConfig):
    """Config of a step that loads a Keras artifact: the workflow's model section says which package's layer classes
    may be imported to rebuild it."""

    model: ModelSpec | None = Field(
        None, description="the workflow's model: only its builder's package is imported to load the parent's own layers"
    )


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
    custom = custom_layers(model)
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
        details={**(details or {}), **({CUSTOM_LAYERS: custom} if custom else {})},
    )
    return finish(folder, meta)


def custom_layers(model) -> dict[str, str]:
    """The model's own layer classes (nested and wrapped layers included): saved name -> 'module:Class'."""
    _, keras = import_tf()
    classes = {type(module) for module in (model, *model.submodules) if isinstance(module, keras.layers.Layer)}
    return {
        keras.utils.get_registered_name(cls): f"{cls.__module__}:{cls.__qualname__}"
        for cls in sorted(classes, key=lambda cls: (cls.__module__, cls.__qualname__))
        if cls.__module__.split(".")[0] not in BUILT_IN_PACKAGES
    }


def builder_package(model: ModelSpec | None) -> str | None:
    """The top-level package of the workflow's builder ('package.module:function' -> 'package'); None for a zoo model."""
    return model.builder.partition(":")[0].split(".")[0] if model is not None and model.builder else None


def check_layer_module(module_name: str, model: ModelSpec | None, step: str, uri: str) -> None:
    """Importing a module runs its code, and artifact.json can be edited: only a module of the package the workflow
    declares as its builder is imported, whatever the artifact names."""
    package = builder_package(model)
    if package is not None and MODULE_NAME.fullmatch(module_name) and module_name.split(".")[0] == package:
        return
    refused = f"{step}: the model in {uri} names module '{module_name}' for its own layer classes, which is not imported"
    if model is None:
        raise UserError(
            f"{refused} without the workflow's model section; pass it in --config: "
            '"model": {"builder": "package.module:function"}'
        )
    if package is None:
        raise UserError(f"{refused}: the workflow's model is zoo model '{model.zoo}', which has no module of its own; "
                        "a model with its own layers needs model: {builder: package.module:function}")
    raise UserError(f"{refused}: it is outside package '{package}' of the workflow's model.builder {model.builder}; "
                    "declare the builder whose package defines these layers")


def import_layer_class(location: str, model: ModelSpec | None, step: str, uri: str):
    """A layer class from its 'module:Class', as the model's artifact recorded it, if the workflow allows the module."""
    module_name, _, qualname = location.partition(":")
    check_layer_module(module_name, model, step, uri)
    try:
        found = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"the model's layer class {qualname} is defined in module '{module_name}', which cannot be imported ({exc}); "
            "put it on PYTHONPATH as when the model was trained"
        ) from None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is None:  # e.g. a class defined inside the builder function ('build.<locals>.Scale')
        raise UserError(
            f"the model's layer class {qualname} cannot be imported from module '{module_name}'; define it at the top "
            "level of the module and re-run train"
        )
    return found


def load_keras_artifact(folder: Path, meta: ArtifactMeta, uri: str, step: str, model: ModelSpec | None):
    """The Keras model of an opened artifact, the builder's own layer classes imported first so Keras can rebuild
    them in a process that never ran the builder; `model` is the workflow's model section, whose builder's package
    is the only one imported."""
    if not (folder / KERAS_FILE).is_file():
        raise UserError(
            f"{step} reads a Keras model artifact (with {KERAS_FILE}); {uri} is a {meta.format} artifact: pass the "
            "output of train or of a compression step"
        )
    from modelpress.io.modelfiles import HDF5_MAGIC, check_magic

    check_magic(folder / KERAS_FILE, HDF5_MAGIC, 0, "an HDF5 Keras model")
    recorded = meta.details.get(CUSTOM_LAYERS, {})
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise UserError(f"{step}: {uri}'s artifact.json has a {CUSTOM_LAYERS} that is not a mapping of layer to 'module:Class'; re-run the step that made it")
    classes = {name: import_layer_class(location, model, step, uri) for name, location in recorded.items()}
    import_tf()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        with SafeModeScope(True):  # the HDF5 loader ignores load_model's safe_mode argument; the scope applies to it
            return load_keras_model(folder / KERAS_FILE, classes)
    except (OSError, KeyError) as exc:  # h5py: truncated file or missing groups
        raise UserError(f"{folder / KERAS_FILE} is unreadable ({' '.join(str(exc).split())[:160]}); re-run the step that makes it") from None
    except ValueError as exc:
        if "arbitrary code execution" in str(exc):
            raise UserError(
                f"{step}: the model in {uri} holds a Lambda layer with Python code, which is never loaded (it would run "
                "on load); replace the Lambda with a registered layer class in the builder's module and re-run train"
            ) from None
        unknown = UNKNOWN_CLASS.search(str(exc))
        if unknown is None:
            raise
        raise UserError(
            f"{step}: the model in {uri} uses {unknown['kind']} '{unknown['name']}', which Keras does not know; decorate "
            "it with @keras.utils.register_keras_serializable() in the builder's module and re-run train"
        ) from None
