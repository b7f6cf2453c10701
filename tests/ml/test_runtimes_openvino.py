"""OpenVINO artifacts run with the runtime's documented latency setup (what validate times and what the
benchmark's peers get too): the LATENCY hint, a static input shape per batch size, inputs shared with the caller,
f32 arithmetic, and the Keras model's predictions at every batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelpress.common.tf import import_tf
from modelpress.ml.runtimes import OpenVINORunner

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model_and_ir(tmp_path_factory) -> tuple[object, Path]:
    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("openvino") / "model.xml"
    ov.save_model(ov.convert_model(model), path)
    return model, path


def test_every_batch_size_runs_a_static_shape_with_the_latency_hint(model_and_ir):
    model, path = model_and_ir
    runner = OpenVINORunner(path, threads=1)
    rows = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(runner.predict(rows[:1]), model.predict(rows[:1], verbose=0), atol=1e-4)
    np.testing.assert_allclose(runner.predict(rows), model.predict(rows, verbose=0), atol=1e-4)
    for shape in ((1, 8, 8, 1), (5, 8, 8, 1)):
        compiled = runner.request(shape).get_compiled_model()
        assert tuple(compiled.input(0).get_partial_shape().to_shape()) == shape  # static: no dynamic batch dimension
        assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert list(runner._requests) == [(1, 8, 8, 1), (5, 8, 8, 1)]  # one compilation per batch size, reused


def test_inputs_are_shared_not_copied_and_outputs_survive_the_next_call(model_and_ir):
    _, path = model_and_ir
    runner = OpenVINORunner(path, threads=1)
    first, second = np.random.default_rng(1).random((2, 1, 8, 8, 1), dtype=np.float32)
    kept = runner.predict(first)
    assert np.shares_memory(runner.request(first.shape).get_input_tensor().data, first)
    runner.predict(second)
    np.testing.assert_allclose(kept, runner.predict(first), atol=1e-6)  # the first answer was copied out, not a view
