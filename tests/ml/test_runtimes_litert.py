""".tflite models run in LiteRT (ai_edge_litert), not the deprecated tf.lite interpreter: no deprecation warning,
the configured thread count, and the same predictions as the Keras model they came from."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.tf import import_tf
from modelpress.ml.runtimes import TFLiteRunner, interpreter


@pytest.fixture(scope="module")
def model_and_tflite(tmp_path_factory) -> tuple[object, Path]:
    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    folder = tmp_path_factory.mktemp("litert")
    (folder / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return model, folder


def test_the_tflite_runtime_is_litert_and_warns_nothing(model_and_tflite):
    model, folder = model_and_tflite
    rows = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = TFLiteRunner(folder / "model.tflite", threads=2)
        predicted = runner.predict(rows)
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning | UserWarning)] == []
    assert runner.runtime == "litert" and runner.threads == 2
    assert type(runner._interpreter).__module__.startswith("ai_edge_litert.")
    np.testing.assert_allclose(predicted, model.predict(rows, verbose=0), atol=1e-5)


def test_the_interpreter_runs_with_the_thread_count_it_is_given(model_and_tflite):
    _, folder = model_and_tflite

    def os_threads() -> int:
        return len(list(Path("/proc/self/task").iterdir()))

    before = os_threads()
    reader = interpreter(model_path=str(folder / "model.tflite"), num_threads=3)
    reader.allocate_tensors()
    reader.set_tensor(reader.get_input_details()[0]["index"], np.zeros((1, 8, 8, 1), np.float32))
    reader.invoke()
    assert os_threads() - before == 2  # LiteRT's pool: two workers beside the calling thread
