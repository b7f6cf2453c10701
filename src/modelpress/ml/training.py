"""Training shared by every step that fits a model (train, the compression steps' fine-tuning, distill, tune):
optimizers, mixed precision, multi-worker batches, the fit loop with progress, and test accuracy."""

from __future__ import annotations

import json
import math
import os
import time

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.contract.training import TrainSpec

OPTIMIZERS = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def make_optimizer(train: TrainSpec, steps_per_epoch: int):
    """The optimizer; with the cosine schedule its learning rate reaches 0 at the end of train.epochs."""
    _, keras = import_tf()
    rate = train.learning_rate
    if train.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=max(1, train.epochs * steps_per_epoch))
    return getattr(keras.optimizers, OPTIMIZERS[train.optimizer])(learning_rate=rate)


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


def fit(model, data, train: TrainSpec, label: str = "train", loss=None, callbacks: list | None = None, distributed: bool = False):
    """Compile and fit with progress lines and optional early stopping; shared by every step that trains.
    `callbacks` come first: they run before the progress line and early stopping see the epoch (e.g. re-masking).
    `distributed`: called under a MultiWorkerMirroredStrategy scope: each worker reads its own part of the data
    (its shards when streamed) in batches of its share of train.batch_size."""
    tf, keras = import_tf()
    # Distributed workers take fixed steps (below); one process takes every batch, the last one partial.
    steps = max(1, data.count("train") // train.batch_size) if distributed else max(1, math.ceil(data.count("train") / train.batch_size))
    model.compile(
        optimizer=make_optimizer(train, steps),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    callbacks = [*(callbacks or []), epoch_callback(train.epochs, label)]
    if train.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_accuracy", patience=train.early_stopping_patience, restore_best_weights=True)
        )
    has_validation = data.count("val") > 0
    with data.errors():
        if not distributed:
            validation = data.batches("val", train.batch_size) if has_validation else None
            training = data.batches("train", train.batch_size, shuffle=True, seed=train.seed)
            return model.fit(training, epochs=train.epochs, validation_data=validation, callbacks=callbacks, verbose=0)
        strategy = tf.distribute.get_strategy()

        def per_worker(split: str, shuffle: bool):
            def pipeline(context):
                share = context.get_per_replica_batch_size(train.batch_size)
                part = (context.input_pipeline_id, context.num_input_pipelines)
                return data.batches(split, share, shuffle=shuffle, seed=train.seed, shard=part).repeat()

            return strategy.distribute_datasets_from_function(pipeline)

        # Workers' parts differ in size: a fixed number of steps keeps the collective ops in step.
        validation_steps = max(1, data.count("val") // train.batch_size) if has_validation else None
        return model.fit(
            per_worker("train", True),
            epochs=train.epochs,
            steps_per_epoch=steps,
            validation_data=per_worker("val", False) if has_validation else None,
            validation_steps=validation_steps,
            callbacks=callbacks,
            verbose=0,
        )


def test_accuracy(model, data) -> float:
    """Accuracy on the test split, accumulated batch by batch."""
    import numpy as np

    correct = 0
    with data.errors():
        for x, y in data.batches("test", 512):
            correct += int(np.sum(np.argmax(model.predict_on_batch(x), axis=1) == y.numpy()))
    return correct / data.count("test")


def epoch_callback(total_epochs: int, label: str = "train"):
    """A Keras callback printing one line per epoch: loss, accuracy, validation accuracy, time."""
    from modelpress.common.tf import import_tf

    _, keras = import_tf()

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"{key} {logs[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in logs]
            log(f"{label} epoch {epoch + 1}/{total_epochs}  " + "  ".join(parts) + f"  ({time.monotonic() - self._started:.1f}s)")

    return EpochProgress()
