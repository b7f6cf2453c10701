"""train.mixed_precision: mixed_float16 on a GPU, float32 with a note on CPU; the policy is printed and recorded, and
the final softmax stays float32 whenever mixed precision is on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf
from modelpress.contract.training import ModelSpec
from modelpress.ml.models import build_model
from modelpress.ml.training import apply_mixed_precision, check_output_precision
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.train.step import run as train

tf, keras = import_tf()
needs_cpu_only = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="the CPU fallback needs a machine without a GPU")


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@needs_cpu_only
def test_cpu_falls_back_to_float32_with_a_note(capsys):
    assert apply_mixed_precision(True) == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert "mixed precision requested but no GPU is present: training in float32" in capsys.readouterr().err


@needs_cpu_only
def test_train_prints_and_records_the_policy_it_used(tmp_path, capsys):
    config = TrainConfig.model_validate(
        {"model": {"zoo": "mlp", "params": {"hidden": [8]}}, "data": {"source": "digits"}, "train": {"epochs": 1, "mixed_precision": True}}
    )
    train(config, {}, str(tmp_path / "train"))
    err = capsys.readouterr().err
    assert "no GPU is present: training in float32" in err and "policy float32" in err
    details = json.loads((tmp_path / "train" / "artifact.json").read_text())["details"]
    assert details["precision_policy"] == "float32" and details["train"]["mixed_precision"] is True


@pytest.mark.parametrize("zoo, params", [("mlp", {"hidden": [8]}), ("small_cnn", {"filters": [4], "dense": 8})])
def test_zoo_models_keep_a_float32_softmax_under_mixed_float16(mixed_float16, zoo, params):
    model = build_model(ModelSpec(zoo=zoo, params=params), (8, 8, 1), 10)
    assert model.get_layer("logits").compute_dtype == "float16"  # the body computes in float16 ...
    assert model.get_layer("probabilities").compute_dtype == "float32"  # ... the softmax in float32
    assert model.output.dtype == "float32"
    check_output_precision(model, "mixed_float16")
    probabilities = model.predict(np.random.default_rng(0).random((4, 8, 8, 1), dtype="float32"), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_a_float16_output_under_mixed_precision_is_refused(mixed_float16):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs), name="byo")
    assert model.output.dtype == "float16"
    with pytest.raises(UserError, match=r"model byo outputs float16 under mixed precision; give its last layer dtype='float32'"):
        check_output_precision(model, "mixed_float16")
    check_output_precision(model, "float32")  # no check without mixed precision
