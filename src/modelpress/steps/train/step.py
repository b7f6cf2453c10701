"""train: build the model, fit it on the workflow's data with progress, save it as an artifact.

The untrained weights are kept (`initial.weights.h5`): lottery-ticket pruning rewinds survivors to them.

Multi-worker training: when TF_CONFIG names more than one worker (the TFJob operator sets it on each replica of the
TFJob the adapters create for `train.workers > 1`), the model is built and compiled under
MultiWorkerMirroredStrategy and trained on global batches of `train.batch_size` examples split across the
workers. Every worker saves (saving may need the others); only the chief saves into the output, the others into a
scratch folder they drop. Without TF_CONFIG, `train.workers > 1` trains in the one process, says so, and records
the note in the artifact.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io import storage
from modelpress.io.data import load_dataset, source_digest
from modelpress.ml.keras_artifact import INITIAL_WEIGHTS_FILE, save_keras_artifact
from modelpress.ml.models import build_model
from modelpress.ml.training import apply_mixed_precision, check_output_precision, fit, test_accuracy, tf_config_cluster
from modelpress.steps.train.config import TrainConfig


def apply_hyperparameters(config: TrainConfig, uri: str | None) -> tuple[TrainSpec, ModelSpec]:
    """A tune step's best configuration (`best.json`: {"train": {...}, "model": {"params": {...}}}) overrides the
    spec's train settings and model parameters."""
    if not uri:
        return config.train, config.model
    best = json.loads(storage.read_bytes(storage.join(uri, "best.json")))
    tuned_params = best.get("model", {}).get("params", {})
    log(f"using tuned hyperparameters: {best.get('train', {})}" + (f", model params {tuned_params}" if tuned_params else ""))
    model = config.model.model_copy(update={"params": {**config.model.params, **tuned_params}})
    return config.train.model_copy(update=best.get("train", {})), model


def validation_scores(history: dict[str, list[float]]) -> dict[str, float]:
    """The best epoch's validation accuracy (highest) and loss (lowest), as tune ranks its trials; non-finite left out."""
    best = {"val_accuracy": max, "val_loss": min}
    scores = {name: float(pick(history[name])) for name, pick in best.items() if history.get(name)}
    return {name: value for name, value in scores.items() if math.isfinite(value)}


def run(config: TrainConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    workers, chief, task = tf_config_cluster()
    tf, keras = import_tf()
    # Created before any other TensorFlow op: it sets up the collective ops the workers train with.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else None
    storage.check_output(output, overwrite)
    train, model_spec = apply_hyperparameters(config, inputs.get("hyperparameters"))
    note = None
    if strategy is not None:
        log(f"multi-worker training: task {task}, {strategy.num_replicas_in_sync} replicas in sync")
        if train.batch_size % workers:
            raise UserError(
                f"train.batch_size {train.batch_size} does not divide among the {workers} workers sharing each batch; "
                f"make it a multiple of {workers}"
            )
    elif train.workers > 1:
        note = f"train.workers is {train.workers} but TF_CONFIG names no cluster: trained in this one process (on Kubernetes the adapters run a TFJob)"
        log(note)
    data_digest = source_digest(config.data)  # before loading: the digest the Kubeflow cache is keyed on, in every mode
    data = load_dataset(config.data)
    log(f"data {data.describe()}")
    keras.utils.set_random_seed(train.seed)
    policy = apply_mixed_precision(train.mixed_precision)
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    with scope():
        model = build_model(model_spec, data.input_shape, data.num_classes)
        check_output_precision(model, policy)
        log(f"model {model.name}: {model.count_params():,} parameters, policy {policy}")
    with tempfile.TemporaryDirectory(prefix="modelpress-train-") as scratch:
        initial = Path(scratch) / INITIAL_WEIGHTS_FILE
        model.save_weights(initial)
        started = time.monotonic()
        with scope():
            history = fit(model, data, train, distributed=strategy is not None)
        seconds = time.monotonic() - started
        accuracy = test_accuracy(model, data)
        log(f"test accuracy {accuracy:.4f} after {len(history.history['loss'])} epochs ({seconds:.1f}s)")
        if scores := validation_scores(history.history):
            # name=value: what Katib's StdOut metrics collector reads when a Katib trial runs this step
            log("validation " + " ".join(f"{name}={value:.6f}" for name, value in scores.items()))
        keras.mixed_precision.set_global_policy("float32")
        # Every worker saves (saving may need the others); only the chief into the output.
        replica_folder = Path(scratch) / "replica"
        replica_folder.mkdir()
        destination = storage.staged_output(output, overwrite=overwrite) if chief else contextlib.nullcontext(replica_folder)
        with destination as folder:
            shutil.copy(initial, folder / INITIAL_WEIGHTS_FILE)
            meta = save_keras_artifact(
                model,
                folder,
                step="train",
                config=config,
                parent=None,
                data_hash=data.hash,
                metrics={"accuracy": accuracy, "train_seconds": round(seconds, 2)},
                details={
                    "epochs_run": len(history.history["loss"]),
                    "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.history.items()},
                    "precision_policy": policy,
                    "train": train.model_dump(),
                    "model": model_spec.model_dump(),
                    "train_examples": data.count("train"),
                    "input_shape": list(data.input_shape),
                    "num_classes": data.num_classes,
                    "class_names": data.class_names,
                    "workers": workers,
                    "data_digest": data_digest,
                    "replicas_in_sync": strategy.num_replicas_in_sync if strategy is not None else 1,
                    **({"note": note} if note else {}),
                },
            )
    return {"uri": output, "format": meta.format, "metrics": meta.metrics, "task": task, "wrote_output": chief}
