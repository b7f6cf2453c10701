"""distill: the student learns from the teacher's logits, the scratch baseline is trained and recorded beside it, and
bad parameters are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf, load_keras_model
from modelpress.ml.distillation import logits_model
from modelpress.steps.distill.config import DistillConfig
from modelpress.steps.distill.step import gap_recovered
from modelpress.steps.distill.step import run as distill
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.train.step import run as train
from tests.cli.test_main_bad_inputs import assert_one_line_error
from tests.conftest import TINY_WORKFLOW

DATA = {"source": "digits"}
TRAIN = {"epochs": 3, "batch_size": 64, "learning_rate": 0.01}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("distill") / "teacher")
    config = TrainConfig.model_validate({"model": {"zoo": "mlp", "params": {"hidden": [64]}}, "data": DATA, "train": TRAIN})
    train(config, {}, uri)
    return uri


def distill_config(student_hidden: list[int], **params) -> DistillConfig:
    student = {"zoo": "mlp", "params": {"hidden": student_hidden}}
    return DistillConfig.model_validate({"student": student, "data": DATA, "train": TRAIN, **params})


@pytest.fixture(scope="module")
def distilled(teacher, tmp_path_factory) -> tuple[str, dict]:
    uri = str(tmp_path_factory.mktemp("distill") / "student")
    return uri, distill(distill_config([8], temperature=4, alpha=0.3), {"model": teacher}, uri)


def test_student_and_scratch_baseline_are_measured_and_recorded(teacher, distilled):
    uri, result = distilled
    metrics = result["metrics"]
    meta = json.loads(open(f"{uri}/artifact.json").read())
    teacher_meta = json.loads(open(f"{teacher}/artifact.json").read())
    assert metrics["teacher_accuracy"] == pytest.approx(teacher_meta["metrics"]["accuracy"])
    assert metrics["student_accuracy"] == metrics["accuracy"] > 0.3  # learnt well above chance (0.1) in 3 epochs
    assert 0.1 < metrics["scratch_accuracy"] < metrics["teacher_accuracy"]  # the tiny student trails the teacher
    assert metrics["gap_recovered"] == pytest.approx(
        (metrics["student_accuracy"] - metrics["scratch_accuracy"]) / (metrics["teacher_accuracy"] - metrics["scratch_accuracy"]),
        abs=1e-4,
    )
    details = meta["details"]
    assert details["scratch_accuracy"] == metrics["scratch_accuracy"]
    assert details["student_params"] == metrics["params"] < details["teacher_params"] / 5
    assert details["student_larger_than_teacher"] is False
    assert details["epochs_run"] == {"distilled": 3, "scratch": 3}
    assert (details["temperature"], details["alpha"]) == (4.0, 0.3)
    assert meta["parent"] == teacher and meta["step"] == "distill"


def test_saved_student_is_a_normal_model_with_probabilities(distilled):
    uri, result = distilled
    from modelpress.contract.data_sources import DigitsData
    from modelpress.io.data import load_dataset

    model = load_keras_model(f"{uri}/model.h5")
    assert model.layers[-1].name == "probabilities" and model.get_layer("dense_1").units == 8
    data = load_dataset(DigitsData(source="digits"))
    probabilities = model.predict(data.x_test, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(probabilities.argmax(axis=1) == data.y_test) == pytest.approx(result["metrics"]["accuracy"])


def test_student_bigger_than_teacher_is_distilled_with_a_warning(teacher, tmp_path, capsys):
    result = distill(distill_config([128], epochs=1), {"model": teacher}, str(tmp_path / "big"))
    assert "warning: the student (9,610 parameters) is not smaller than the teacher (4,810)" in capsys.readouterr().err
    meta = json.loads((tmp_path / "big" / "artifact.json").read_text())
    assert meta["details"]["student_larger_than_teacher"] is True
    assert meta["details"]["epochs_run"] == {"distilled": 1, "scratch": 1}
    assert result["metrics"]["params"] == 9610


def test_gap_recovered_is_none_without_a_gap():
    assert gap_recovered(teacher=0.9, scratch=0.7, student=0.8) == 0.5
    assert gap_recovered(teacher=0.9, scratch=0.95, student=0.93) is None


def test_a_model_without_a_logits_layer_is_refused():
    _, keras = import_tf()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(inputs), name="custom")
    with pytest.raises(UserError, match=r"the teacher model custom has no layer named 'logits'.*name='logits'"):
        logits_model(model, "teacher")


@pytest.mark.parametrize(
    "params, phrase",
    [
        ("temperature: 0", "compress[0] (distill): temperature: temperature must be > 0 (got 0.0)"),
        ("temperature: -2", "temperature must be > 0 (got -2.0)"),
        ("alpha: 1.5", "compress[0] (distill): alpha: alpha must be in [0, 1] (got 1.5)"),
        ("alpha: -0.1", "alpha must be in [0, 1] (got -0.1)"),
        ("temprature: 4", "unknown key 'temprature'; did you mean 'temperature'?"),
        ("alpha: 0.1", "required key 'student' is missing"),
    ],
)
def test_bad_distill_parameters_fail_check_in_one_line(cli, tmp_path, params, phrase):
    student = "" if "student" in phrase else ", student: {zoo: mlp, params: {hidden: [16]}}"
    path = tmp_path / "wf.yaml"
    path.write_text(TINY_WORKFLOW + f"compress:\n  - {{technique: distill{student}, {params}}}\n")
    assert_one_line_error(cli("check", str(path)), phrase)


def test_distill_workflow_plans_validation_against_the_trained_model(cli, tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        TINY_WORKFLOW + "compress: [{technique: distill, student: {zoo: mlp, params: {hidden: [16]}}, temperature: 4, alpha: 0.1}]\n"
    )
    result = cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert "distill" in result.stdout and "reads train" in result.stdout
    assert "validate_distill" in result.stdout


def test_step_command_rejects_a_bad_temperature_before_reading_the_teacher(cli, tmp_path):
    config = {"student": {"zoo": "mlp"}, "data": DATA, "temperature": 0}
    result = cli("step", "distill", "--config", json.dumps(config), "--input", "model=/nonexistent", "--output", str(tmp_path / "out"))
    assert_one_line_error(result, "step distill --config", "temperature must be > 0 (got 0.0)")
    assert not (tmp_path / "out").exists()


def test_steps_after_a_distill_load_the_students_architecture(tmp_path):
    """A step loading a Keras artifact imports layer modules only from its model's builder package: after distill,
    that is the student's (maybe another package), before it the workflow's."""
    from modelpress.execution.plan import build_plan, load_workflow

    path = tmp_path / "students.yaml"
    path.write_text(
        "name: students\nmodel: {builder: 'team_a.nets:big'}\ndata: {source: digits}\n"
        "compress:\n  - {technique: prune}\n  - {technique: distill, student: {builder: 'team_b.small:tiny'}}\n"
        "  - {technique: cluster}\ntargets: [saved_model, tflite_fp32]\n"
    )
    configs = {task.id: task.config for task in build_plan(load_workflow(path))}
    assert configs["prune"].model.builder == "team_a.nets:big" and configs["distill"].model.builder == "team_a.nets:big"
    assert configs["cluster"].model.builder == "team_b.small:tiny"  # it loads the distilled student
    assert configs["convert_tflite_fp32"].model.builder == "team_b.small:tiny"
