"""Progress lines on stderr (stdout stays for results), readable in a terminal, a pod log and the KFP UI."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def epoch_callback(total_epochs: int, label: str = "train"):
    """A Keras callback printing one line per epoch: loss, accuracy, validation accuracy, time."""
    from .tf import import_tf

    _, keras = import_tf()

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"{key} {logs[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in logs]
            log(f"{label} epoch {epoch + 1}/{total_epochs}  " + "  ".join(parts) + f"  ({time.monotonic() - self._started:.1f}s)")

    return EpochProgress()
