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
import os
import shutil
import tempfile
import time
from pathlib import Path

from .._core import storage
from .._core.data import load_dataset
from .._core.errors import UserError
from .._core.keras_artifact import INITIAL_WEIGHTS_FILE, save_keras_artifact
from .._core.models import build_model
from .._core.progress import epoch_callback, log
from .._core.spec import ModelSpec, TrainSpec
from .._core.tf import import_tf
from .config import TrainConfig

OPTIMIZERS = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def make_optimizer(train: TrainSpec):
    _, keras = import_tf()
    return getattr(keras.optimizers, OPTIMIZERS[train.optimizer])(learning_rate=train.learning_rate)


def apply_mixed_precision(enabled: bool) -> str:
    """Set the global Keras policy; mixed_float16 only pays off (and is only numerically tested) on a GPU."""
    tf, keras = import_tf()
    if not enabled:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    if not tf.config.list_physical_devices("GPU"):
        log("mixed precision requested but no GPU is present: training in float32 (mixed_float16 needs a GPU with compute capability >= 7.0)")
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    keras.mixed_precision.set_global_policy("mixed_float16")
    return "mixed_float16"


def check_output_precision(model, policy: str) -> None:
    """Under mixed_float16 the final softmax must compute in float32 (in float16 it overflows and underflows). The zoo
    models' `probabilities` layer does; a builder's model that ends in float16 is refused with the fix."""
    if policy == "mixed_float16" and model.output.dtype != "float32":
        import_tf()[1].mixed_precision.set_global_policy("float32")  # callers in this process build in float32 again
        raise UserError(
            f"model {model.name} outputs {model.output.dtype.name} under mixed precision; give its last layer "
            "dtype='float32' (e.g. keras.layers.Activation('softmax', dtype='float32')) or set train.mixed_precision: false"
        )


def tf_config_cluster() -> tuple[int, bool, str]:
    """From TF_CONFIG: the number of workers (the chief included), whether this process is the chief, and its task
    ('chief:0', 'worker:1'). Without TF_CONFIG: (1, True, 'local')."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1, True, "local"
    try:
        config = json.loads(raw)
    except ValueError:
        raise UserError("TF_CONFIG is not valid JSON; unset it or give {cluster: {chief: [...], worker: [...]}, task: {...}}") from None
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if cluster.get("ps"):
        raise UserError("TF_CONFIG names parameter servers; train runs MultiWorkerMirroredStrategy: give chief and worker tasks only")
    kind, index = task.get("type"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return len(cluster.get("chief", [])) + len(cluster.get("worker", [])), chief, f"{kind}:{index}"


def global_batches(x, y, train: TrainSpec, shuffle: bool):
    """Batches of train.batch_size examples for the whole cluster (each worker computes its share), sharded by
    example: every worker holds the arrays in memory, so there are no files to shard by."""
    tf, _ = import_tf()
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:  # the same seed on every worker, so the shards of a batch never overlap
        dataset = dataset.shuffle(len(x), seed=train.seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(train.batch_size).with_options(options)


def fit(model, data, train: TrainSpec, label: str = "train", loss=None, callbacks: list | None = None, distributed: bool = False):
    """Compile and fit with progress lines and optional early stopping; shared by every step that trains.
    `callbacks` come first: they run before the progress line and early stopping see the epoch (e.g. re-masking).
    `distributed`: called under a MultiWorkerMirroredStrategy scope; the data goes in as global batches."""
    _, keras = import_tf()
    model.compile(
        optimizer=make_optimizer(train),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    callbacks = [*(callbacks or []), epoch_callback(train.epochs, label)]
    if train.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_accuracy", patience=train.early_stopping_patience, restore_best_weights=True)
        )
    if distributed:
        validation = global_batches(data.x_val, data.y_val, train, shuffle=False) if len(data.x_val) else None
        training = global_batches(data.x_train, data.y_train, train, shuffle=True)
        return model.fit(training, epochs=train.epochs, validation_data=validation, callbacks=callbacks, verbose=0)
    validation = (data.x_val, data.y_val) if len(data.x_val) else None
    return model.fit(
        data.x_train,
        data.y_train,
        batch_size=train.batch_size,
        epochs=train.epochs,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
    )


def test_accuracy(model, data) -> float:
    import numpy as np

    predictions = model.predict(data.x_test, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=1) == data.y_test))


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
        if train.batch_size < workers:
            raise UserError(f"train.batch_size {train.batch_size} is smaller than the {workers} workers sharing each batch; raise it to at least {workers}")
    elif train.workers > 1:
        note = f"train.workers is {train.workers} but TF_CONFIG names no cluster: trained in this one process (on Kubernetes the adapters run a TFJob)"
        log(note)
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
                    "input_shape": list(data.input_shape),
                    "num_classes": data.num_classes,
                    "class_names": data.class_names,
                    "workers": workers,
                    "replicas_in_sync": strategy.num_replicas_in_sync if strategy is not None else 1,
                    **({"note": note} if note else {}),
                },
            )
    return {"uri": output, "format": meta.format, "metrics": meta.metrics, "task": task, "wrote_output": chief}
