"""Structured pruning of modern CNNs through the step: a tiny ResNet (ratios from the sensitivity pass) and a tiny
MobileNetV2 (nested backbone, uniform ratios), both trained, pruned and fine-tuned with the unpruned model as teacher,
read back as a user would, then converted to every CPU format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpress.common.tf import load_keras_model
from modelpress.contract.formats import CONVERT_FORMATS, FLOAT_FORMATS
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io.artifacts import read_meta
from modelpress.steps.convert import step as convert
from modelpress.steps.convert.config import ConvertConfig
from modelpress.steps.prune import step as prune
from modelpress.steps.prune.config import PruneConfig
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = {"source": "digits", "resize": [32, 32], "channels": 3}
CPU_FORMATS = [f for f in CONVERT_FORMATS if not f.startswith("tensorrt")]
# name -> (model, allocation, training epochs). Trained until its classes stand apart: a weak model's top classes are
# so close that half precision swaps them, and convert refuses an fp16 model that disagrees with its parent.
CASES = {
    "resnet": (ModelSpec(zoo="resnet", params={"width": 8, "blocks": [1, 1]}), "sensitivity", 3),
    "mobilenet_v2": (ModelSpec(zoo="mobilenet_v2", params={"alpha": 0.35}), "uniform", 10),
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("structural_cnns")


@pytest.fixture(scope="module")
def pruned(work):
    """name -> the artifact of that CNN pruned by the step to half its channels (uniform) or multiply-adds
    (sensitivity), made on first use."""
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            spec, allocation, epochs = CASES[name]
            parent = work / f"{name}_parent"
            train.run(TrainConfig(model=spec, data=IMAGES, train=TrainSpec(epochs=epochs, batch_size=32)), {}, str(parent))
            made[name] = work / f"{name}_pruned"
            config = PruneConfig(
                method="structured",
                allocation=allocation,
                ratio=0.5,
                sensitivity_samples=64,
                epochs=1,
                data=IMAGES,
                train=TrainSpec(batch_size=32, learning_rate=0.001),
            )
            prune.run(config, {"model": str(parent)}, str(made[name]))
        return made[name]

    return make


@pytest.mark.parametrize("name", list(CASES))
def test_the_step_prunes_a_cnn_to_a_plain_smaller_model_and_records_how(pruned, name):
    folder = pruned(name)
    meta = json.loads((folder / "artifact.json").read_text())
    details = meta["details"]
    model = load_keras_model(folder / "model.h5")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Functional" not in kinds and kinds >= {"Add", "Conv2D", "BatchNormalization"}  # flat, built-in layers only
    assert details["allocation"] == CASES[name][1] and details["teacher"] == {"temperature": 4.0, "alpha": 0.5}
    assert details["params_after"] == meta["metrics"]["params"] == model.count_params() < details["params_before"]
    assert details["multiply_adds_after"] <= 0.5 * details["multiply_adds_before"]
    for group in details["groups"]:
        for layer in group["layers"]:  # every producer of a group keeps the same channels
            assert model.get_layer(layer).filters == group["channels_after"] == details["units"][layer]["after"]
    assert model.output_shape == (None, 10) and model.get_layer("logits").units == 10
    if CASES[name][1] == "uniform":
        assert all(group["channels_after"] == group["channels_before"] - round(group["channels_before"] / 2) for group in details["groups"])
        return
    assert details["sensitivity"]["split"] == "val" and details["sensitivity"]["rows"] == 64
    assert details["sensitivity"]["accuracy"] > 0.3  # the trained parent, far above chance (0.1)
    for group in details["groups"]:
        assert [row["ratio"] for row in group["sensitivity"]] == pytest.approx([0.25, 0.5, 0.75], abs=0.05)
        assert group["ratio"] in [0.0] + [row["ratio"] for row in group["sensitivity"]]
    assert meta["metrics"]["accuracy"] > 0.2


@pytest.mark.parametrize(
    ("name", "target"), [(name, target) for name in CASES for target in CPU_FORMATS]
)
def test_the_pruned_cnn_converts(pruned, work, name, target):
    out = work / f"{name}_{target}"
    result = convert.run(ConvertConfig(format=target, data=IMAGES), {"model": str(pruned(name))}, str(out))
    meta = read_meta(str(out))
    assert meta.format == target and meta.parent == str(pruned(name)) and meta.metrics["size_bytes"] > 0
    if target in FLOAT_FORMATS:  # the converter checked the converted model against the pruned Keras model
        assert result["metrics"]["check_agreement"] >= 0.99
