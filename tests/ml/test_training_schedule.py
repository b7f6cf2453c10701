"""train.schedule: constant keeps the learning rate; cosine brings it to 0 at the end of the run's epochs, counted in
the batches fit takes (the last one partial)."""

from __future__ import annotations

import math

import pytest

from modelpress.common.tf import import_tf
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io.data import load_dataset
from modelpress.ml.models import build_model
from modelpress.ml.training import fit

tf, keras = import_tf()


def last_learning_rate(model) -> float:
    """The rate the optimizer applied in its last step."""
    return float(model.optimizer.learning_rate)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_schedule_sets_the_learning_rate_over_the_run(schedule):
    data = load_dataset(DigitsData(source="digits"))
    train = TrainSpec(epochs=2, batch_size=100, learning_rate=0.01, schedule=schedule)
    model = build_model(ModelSpec(zoo="mlp", params={"hidden": [8]}), data.input_shape, data.num_classes)
    fit(model, data, train)
    steps = 2 * math.ceil(data.count("train") / 100)
    assert int(model.optimizer.iterations) == steps
    if schedule == "constant":
        assert last_learning_rate(model) == pytest.approx(0.01)
    else:  # the last of the steps is one step short of the end: 0.01 * (1 + cos(pi * (steps - 1) / steps)) / 2
        assert last_learning_rate(model) == pytest.approx(0.005 * (1 + math.cos(math.pi * (steps - 1) / steps)), rel=1e-3)
