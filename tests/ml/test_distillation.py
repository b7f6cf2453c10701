"""The distillation core: mixup blends inputs and labels alike, and only models with logits can take part."""

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf
from modelpress.ml.distillation import distiller, logits_model
from modelpress.ml.models import mlp

CLASSES = 5


def blended(mixup: float, seed: int = 0):
    """A batch whose single input feature is its label, blended by a distiller: (labels, mixed inputs, targets,
    dominant labels)."""
    labels = np.arange(64) % CLASSES
    inputs = labels.astype("float32")[:, None]
    model = distiller(mlp((1,), CLASSES, hidden=[4]), mlp((1,), CLASSES, hidden=[4]), 4.0, 0.5, mixup=mixup, seed=seed)
    mixed, targets, dominant = model.blend(inputs, labels)
    return labels, np.asarray(mixed)[:, 0], np.asarray(targets), np.asarray(dominant)


def test_mixup_blends_each_input_and_its_label_with_the_same_weight():
    labels, mixed, targets, dominant = blended(mixup=0.4)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    # The input is the label's number, so the blend of the inputs is the blend of the labels' numbers.
    np.testing.assert_allclose(mixed, targets @ np.arange(CLASSES), rtol=1e-5, atol=1e-5)
    assert (targets.max(axis=1) < 0.99).mean() > 0.3  # most examples are real blends, not copies
    np.testing.assert_array_equal(dominant, targets.argmax(axis=1))
    assert not np.array_equal(blended(mixup=0.4, seed=1)[1], mixed)  # the seed draws other blends


def test_without_mixup_the_batch_passes_unchanged():
    labels, mixed, targets, dominant = blended(mixup=0.0)
    np.testing.assert_array_equal(mixed, labels)
    np.testing.assert_array_equal(targets, np.eye(CLASSES)[labels])
    np.testing.assert_array_equal(dominant, labels)


def test_a_model_without_a_logits_layer_is_refused():
    _, keras = import_tf()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(inputs), name="custom")
    with pytest.raises(UserError, match=r"the teacher model custom has no layer named 'logits'.*name='logits'"):
        logits_model(model, "teacher")
