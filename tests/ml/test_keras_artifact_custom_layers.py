"""A builder's own layer classes: the artifact records where each comes from, and a step in a fresh process (as in a
pipeline) imports it before loading the Keras model, for the compression steps and convert alike, when the module is in
the package of the builder the workflow's model section declares. When it cannot, one line names the class and the fix.
(Modules outside the declared package are refused: tests/cli/test_main_hostile_inputs.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf
from modelpress.contract.data_sources import DigitsData
from modelpress.contract.training import ModelSpec, TrainSpec
from modelpress.io.artifacts import open_artifact, read_meta
from modelpress.io.data import load_dataset
from modelpress.ml.keras_artifact import load_keras_artifact, save_keras_artifact
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig
from tests.cli.test_main_bad_inputs import assert_one_line_error

DATA = {"source": "digits"}
MODULE = "tiny_custom_layers"
MODEL = {"builder": f"{MODULE}:build"}  # the workflow's model section, which every step that loads the model receives
BUILDER = '''
from modelpress.common.tf import import_tf

_, keras = import_tf()


@keras.utils.register_keras_serializable(package="tiny")
class Scale(keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def build(input_shape, num_classes):
    inputs = keras.Input(input_shape, name="input")
    x = Scale(0.5, name="scale")(keras.layers.Flatten(name="flatten")(inputs))
    x = keras.layers.Dense(16, activation="relu", name="dense_1")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
'''


@pytest.fixture(scope="module")
def builder_path(tmp_path_factory) -> Path:
    """A folder holding the builder's module; on sys.path while this module's tests run."""
    folder = tmp_path_factory.mktemp("builder")
    (folder / f"{MODULE}.py").write_text(BUILDER)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def trained(builder_path) -> str:
    uri = str(builder_path / "train")
    config = TrainConfig(model=ModelSpec(builder=f"{MODULE}:build"), data=DATA, train=TrainSpec(epochs=1, batch_size=64))
    train.run(config, {}, uri)
    return uri


def test_the_artifact_records_where_its_own_layer_classes_come_from(trained):
    assert read_meta(trained).details["custom_layers"] == {"tiny>Scale": f"{MODULE}:Scale"}


def test_prune_cluster_convert_and_validate_load_the_model_in_a_fresh_process(cli, builder_path, trained):
    pruned, clustered, converted = builder_path / "prune", builder_path / "cluster", builder_path / "tflite"
    env = {"PYTHONPATH": str(builder_path)}
    steps = [
        ("prune", {"epochs": 1}, trained, pruned),
        ("cluster", {"clusters": 8, "epochs": 0}, pruned, clustered),
        ("convert", {"format": "tflite_fp32"}, clustered, converted),
    ]
    for step, config, parent, output in steps:
        config = json.dumps({"data": DATA, "model": MODEL, **config})
        result = cli("step", step, "--config", config, "--input", f"model={parent}", "--output", str(output), env=env)
        assert result.returncode == 0, result.stderr
    assert read_meta(str(clustered)).details["custom_layers"] == {"tiny>Scale": f"{MODULE}:Scale"}  # passed on
    assert read_meta(str(converted)).details["check_agreement"] >= 0.99
    # validate runs the SavedModel, which needs no Python class: no model section, no builder on the path
    config = json.dumps({"name": "cluster", "data": DATA, "evaluation": {"latency_runs": 5}})
    result = cli("step", "validate", "--config", config, "--input", f"model={clustered}", "--output", str(builder_path / "v"))
    assert result.returncode == 0, result.stderr
    predicted = np.load(builder_path / "v" / "predictions.npy")  # the SavedModel's classes for the test split
    accuracy = (predicted == load_dataset(DigitsData(source="digits")).y_test).mean()
    assert accuracy == pytest.approx(read_meta(str(clustered)).metrics["accuracy"], abs=0.002)  # as cluster's Keras model


def test_a_workflow_run_gives_the_steps_that_load_the_model_its_builder(cli, builder_path):
    workflow = builder_path / "wf.yaml"
    workflow.write_text(
        f"name: tiny-custom\nmodel: {{builder: '{MODULE}:build'}}\ndata: {{source: digits}}\ntrain: {{epochs: 1, batch_size: 64}}\n"
        "compress: [{technique: prune, epochs: 1}]\ntargets: [saved_model, tflite_fp32]\nevaluation: {latency_runs: 5}\n"
    )
    result = cli("run", str(workflow), "--out", str(builder_path / "run"), env={"PYTHONPATH": str(builder_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((builder_path / "run" / "summary.json").read_text())
    assert {row["name"] for row in summary["artifacts"]} == {"train", "prune", "tflite_fp32"}


def test_a_module_that_cannot_be_imported_is_named(cli, builder_path, trained):
    config = json.dumps({"data": DATA, "model": MODEL, "epochs": 0})
    result = cli("step", "cluster", "--config", config, "--input", f"model={trained}", "--output", str(builder_path / "c"))
    assert_one_line_error(result, f"layer class Scale is defined in module '{MODULE}', which cannot be imported", "PYTHONPATH")
    assert not (builder_path / "c").exists()


def test_a_step_run_by_hand_without_the_model_section_is_told_to_pass_it(cli, builder_path, trained):
    config = json.dumps({"data": DATA, "format": "tflite_fp32"})
    env = {"PYTHONPATH": str(builder_path)}
    result = cli("step", "convert", "--config", config, "--input", f"model={trained}", "--output", str(builder_path / "t"), env=env)
    assert_one_line_error(result, f"names module '{MODULE}'", "without the workflow's model section",
                          '--config: "model": {"builder": "package.module:function"}')
    assert result.returncode == 2 and not (builder_path / "t").exists()


def save_model_with(layer_class, folder: Path, keep_record: bool):
    """A model using `layer_class` saved as an artifact; without its record, as an artifact of an older ModelPress."""
    _, keras = import_tf()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(layer_class(name="custom")(inputs)))
    folder.mkdir()
    config = TrainConfig(model=ModelSpec(builder=f"{MODULE}:build"), data=DATA)
    save_keras_artifact(model, folder, step="train", config=config, parent=None, data_hash=None, metrics={})
    if not keep_record:
        meta = read_meta(str(folder))
        del meta.details["custom_layers"]
        (folder / "artifact.json").write_text(meta.model_dump_json())


def load(folder: Path):
    """Load as a workflow whose builder lives in this test module's package (where the test's classes are defined)."""
    model = ModelSpec(builder=f"{__name__}:save_model_with")
    with open_artifact(str(folder), verify=False) as (local, meta):
        return load_keras_artifact(local, meta, str(folder), "cluster", model)


@pytest.mark.parametrize(
    ("keep_record", "message"),
    [
        (True, "layer class test_a_class_out_of_reach_is_named_with_the_fix.<locals>.Local cannot be imported from "
               "module '[\\w.]*test_keras_artifact_custom_layers'; define it at the top level of the module"),
        (False, "cluster: the model in .* uses layer 'Local', which Keras does not know; decorate it with "
                "@keras.utils.register_keras_serializable\\(\\) in the builder's module"),
    ],
    ids=["defined-in-a-function", "unrecorded"],
)
def test_a_class_out_of_reach_is_named_with_the_fix(tmp_path, keep_record, message):
    _, keras = import_tf()

    class Local(keras.layers.Layer):  # unregistered, and no import reaches a class defined in a function
        def call(self, inputs):
            return inputs

    save_model_with(Local, tmp_path / "model", keep_record)
    with pytest.raises(UserError, match=message):
        load(tmp_path / "model")
