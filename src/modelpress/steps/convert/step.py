"""convert: a Keras artifact -> one target format, the TFX rewriter way: validate the input, convert, validate the output.

1. Input: the artifact must be a Keras model artifact; its model loads with every tfmot wrapper registered, pruning and
   clustering wrappers are stripped (QAT wrappers stay: they carry the INT8 ranges), and the optimizer is never
   loaded. The data must fit the model's input. The parent's predictions on a batch of real test rows are kept.
2. Convert with the target's module (tflite, openvino, onnx, tensorrt) into the staged output.
3. Output: the converted model runs in its own runtime (the same runner validate uses) on that batch. Float formats
   must agree with the parent on at least MIN_FLOAT_AGREEMENT of it, or the step fails and nothing is written;
   quantized formats record their agreement and are judged by the workflow's gates in validate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.progress import log
from modelpress.contract.formats import CALIBRATED_FORMATS, FLOAT_FORMATS, FORMATS
from modelpress.contract.schema import spec_hash
from modelpress.io import storage
from modelpress.io.artifacts import ArtifactMeta, finish, model_size, open_artifact
from modelpress.io.data import calibration_subset, load_dataset
from modelpress.ml.keras_artifact import load_keras_artifact
from modelpress.steps.convert import onnx, openvino, tensorrt, tflite
from modelpress.steps.convert.config import ConvertConfig

MIN_FLOAT_AGREEMENT = 0.99
# Target family (the format's text before '_') -> convert(model, config, calibration, folder) -> (files, details).
# The first file is the model (artifact.json's model_path); the others are files it needs beside it.
CONVERTERS = {"tflite": tflite.convert, "openvino": openvino.convert, "onnx": onnx.convert, "tensorrt": tensorrt.convert}
# Wrapper layers tfmot adds for training only; strip_pruning / strip_clustering replace them by the plain layer.
TRAINING_WRAPPERS = {"PruneLowMagnitude": "pruning", "ClusterWeights": "clustering", "ClusterWeightsMHA": "clustering"}


def strip_training_wrappers(model):
    """The Keras model without training-only parts (pruning or clustering wrappers), and the names of the wrapper
    kinds that were stripped."""
    import tensorflow_model_optimization as tfmot

    found = sorted({TRAINING_WRAPPERS[type(layer).__name__] for layer in model.layers if type(layer).__name__ in TRAINING_WRAPPERS})
    if "pruning" in found:
        model = tfmot.sparsity.keras.strip_pruning(model)
    if "clustering" in found:
        model = tfmot.clustering.keras.strip_clustering(model)
    return model, found


def check_input_shape(model, input_shape: tuple[int, ...]) -> None:
    expected = tuple(model.input_shape[1:])
    if expected != tuple(input_shape):
        raise UserError(
            f"the data gives inputs of shape {tuple(input_shape)} but the model takes {expected}; "
            "use the data (and data.resize/channels) the model was trained with"
        )


def convert_model(model, config: ConvertConfig, calibration: np.ndarray | None, folder: Path) -> tuple[list[str], dict]:
    """Run the target's converter; a converter's own multi-line error becomes one StepFailed line."""
    try:
        return CONVERTERS[FORMATS[config.format].family](model, config, calibration, folder)
    except UserError:
        raise
    except Exception as exc:  # converters raise anything from ValueError to native errors with pages of context
        # Native runtimes (OpenVINO) put source locations first and the reason last: keep the last line.
        reason = next((line.strip() for line in reversed(str(exc).splitlines()) if line.strip()), type(exc).__name__)
        raise StepFailed(f"{config.format} conversion failed: {reason[:300]}") from exc


def judge_agreement(target: str, predicted: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose predicted class equals the parent's; a float format below the floor fails the step."""
    agreement = float(np.mean(np.argmax(predicted, axis=1) == np.argmax(reference, axis=1)))
    if target in FLOAT_FORMATS and agreement < MIN_FLOAT_AGREEMENT:
        raise StepFailed(
            f"{target} agrees with its parent on {agreement:.4f} of {len(reference)} test rows, "
            f"below {MIN_FLOAT_AGREEMENT}; the conversion changed the model, nothing was written"
        )
    return agreement


def skip_or_fail(config: ConvertConfig, reason: str) -> dict:
    reason = f"{config.format} needs an NVIDIA GPU with TensorRT: {reason}"
    if config.on_unavailable == "skip":
        log(f"{config.format} skipped: {reason}")
        return {"skipped": True, "reason": reason}
    raise UserError(f"{reason}; run it on the GPU node pool or set on_unavailable: skip for this target")


def run(config: ConvertConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    from modelpress.ml.runtimes import load_runner

    storage.check_output(output, overwrite)
    if FORMATS[config.format].family == "tensorrt":
        reason = tensorrt.unavailable_reason()
        if reason:
            return skip_or_fail(config, reason)
    data = load_dataset(config.data)
    with open_artifact(inputs["model"]) as (source, parent):
        model, stripped = strip_training_wrappers(load_keras_artifact(source, parent, inputs["model"], "convert", config.model))
    check_input_shape(model, data.input_shape)
    batch = data.head("test", config.check_samples)[0]
    reference = model.predict(batch, batch_size=256, verbose=0)
    if not np.isfinite(reference).all():
        raise UserError(f"the model at {inputs['model']} predicts NaN or infinity on test rows; retrain it before converting")
    calibration, calibration_hash = (None, None)
    if config.format in CALIBRATED_FORMATS:
        calibration, calibration_hash = calibration_subset(data, config.calibration_samples, config.calibration_seed)
    log(f"convert to {config.format}{' (stripped ' + ', '.join(stripped) + ' wrappers)' if stripped else ''}")
    with storage.staged_output(output, overwrite=overwrite) as folder:
        files, details = convert_model(model, config, calibration, folder)
        size = [model_size(folder / name) for name in files]
        meta = ArtifactMeta(
            format=config.format,
            step="convert",
            model_path=files[0],
            parent=inputs["model"],
            config_hash=spec_hash(config),
            data_hash=parent.data_hash,
            calibration_hash=calibration_hash,
            metrics={
                "params": parent.metrics.get("params"),
                "size_bytes": sum(s["size_bytes"] for s in size),
                "size_gzip_bytes": sum(s["size_gzip_bytes"] for s in size),
            },
            details={
                **details,
                "model_files": files,
                "stripped_wrappers": stripped,
                "check_rows": len(batch),
                **({"calibration_rows": len(calibration), "calibration_seed": config.calibration_seed} if calibration is not None else {}),
            },
        )
        agreement = judge_agreement(config.format, load_runner(folder, meta).predict(batch), reference)
        meta.details["check_agreement"] = agreement
        finish(folder, meta)
    log(f"{config.format}: {meta.metrics['size_bytes']:,} bytes, agrees with its parent on {agreement:.4f} of {len(batch)} test rows")
    return {"uri": output, "format": config.format, "metrics": dict(meta.metrics, check_agreement=agreement)}
