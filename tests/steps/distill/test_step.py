"""distill: the student learns from the teacher's logits, the scratch baseline is trained and recorded beside it, the
settings left open are chosen on validation, a student worse than scratch is not handed on, and bad parameters are
one-line errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import load_keras_model
from modelpress.contract.data_sources import DigitsData
from modelpress.io.data import load_dataset
from modelpress.steps.distill.config import DEFAULTS, MIXUPS, TEMPERATURES, DistillConfig
from modelpress.steps.distill.step import choose_settings, clearly_better, gap_recovered
from modelpress.steps.distill.step import run as distill
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.train.step import run as train
from tests.cli.test_main_bad_inputs import assert_one_line_error
from tests.conftest import TINY_WORKFLOW

DATA = {"source": "digits"}
TRAIN = {"epochs": 3, "batch_size": 64, "learning_rate": 0.01}
FIXED = {"temperature": 4, "alpha": 0.3, "mixup": 0.2}  # no search: one distilled training


def train_teacher(folder, model: dict, data: dict, training: dict) -> str:
    uri = str(folder / "teacher")
    train(TrainConfig.model_validate({"model": model, "data": data, "train": training}), {}, uri)
    return uri


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    return train_teacher(tmp_path_factory.mktemp("distill"), {"zoo": "mlp", "params": {"hidden": [64]}}, DATA, TRAIN)


def distill_config(student_hidden: list[int], **params) -> DistillConfig:
    student = {"zoo": "mlp", "params": {"hidden": student_hidden}}
    return DistillConfig.model_validate({"student": student, "data": DATA, "train": TRAIN, **params})


@pytest.fixture(scope="module")
def distilled(teacher, tmp_path_factory) -> tuple[str, dict]:
    uri = str(tmp_path_factory.mktemp("distill") / "student")
    return uri, distill(distill_config([8], **FIXED), {"model": teacher}, uri)


def test_student_and_scratch_baseline_are_measured_and_recorded(teacher, distilled):
    uri, result = distilled
    metrics = result["metrics"]
    meta = json.loads(open(f"{uri}/artifact.json").read())
    teacher_meta = json.loads(open(f"{teacher}/artifact.json").read())
    assert metrics["teacher_accuracy"] == pytest.approx(teacher_meta["metrics"]["accuracy"])
    assert metrics["student_accuracy"] > 0.3  # learnt well above chance (0.1) in 3 epochs
    assert 0.1 < metrics["scratch_accuracy"] < metrics["teacher_accuracy"]  # the tiny student trails the teacher
    handed_on = {"distilled": metrics["student_accuracy"], "scratch": metrics["scratch_accuracy"]}[metrics["handed_on"]]
    assert metrics["accuracy"] == handed_on
    for role in ("teacher", "scratch", "student"):
        assert 0.1 < metrics[f"{role}_val_accuracy"] <= 1
    assert metrics["gap_recovered"] == pytest.approx(
        (metrics["student_accuracy"] - metrics["scratch_accuracy"]) / (metrics["teacher_accuracy"] - metrics["scratch_accuracy"]),
        abs=1e-4,
    )
    details = meta["details"]
    assert details["scratch_accuracy"] == metrics["scratch_accuracy"]
    assert details["student_params"] == metrics["params"] < details["teacher_params"] / 5
    assert details["student_larger_than_teacher"] is False
    assert details["epochs_run"] == {"trials": 0, "distilled": 3, "scratch": 3}
    assert (details["temperature"], details["alpha"], details["mixup"]) == (4.0, 0.3, 0.2)
    assert details["chosen_on_validation"] == [] and details["trials"] == []
    assert meta["parent"] == teacher and meta["step"] == "distill"


def test_saved_student_is_a_normal_model_with_probabilities(distilled):
    uri, result = distilled
    model = load_keras_model(f"{uri}/model.h5")
    assert model.layers[-1].name == "probabilities" and model.get_layer("dense_1").units == 8
    data = load_dataset(DigitsData(source="digits"))
    probabilities = model.predict(data.x_test, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(probabilities.argmax(axis=1) == data.y_test) == pytest.approx(result["metrics"]["accuracy"])


def test_student_bigger_than_teacher_is_distilled_with_a_warning(teacher, tmp_path, capsys):
    result = distill(distill_config([128], epochs=1, **FIXED), {"model": teacher}, str(tmp_path / "big"))
    assert "warning: the student (9,610 parameters) is not smaller than the teacher (4,810)" in capsys.readouterr().err
    meta = json.loads((tmp_path / "big" / "artifact.json").read_text())
    assert meta["details"]["student_larger_than_teacher"] is True
    assert meta["details"]["epochs_run"] == {"trials": 0, "distilled": 1, "scratch": 1}
    assert result["metrics"]["params"] == 9610


def test_gap_recovered_is_none_without_a_gap():
    assert gap_recovered(teacher=0.9, scratch=0.7, student=0.8) == 0.5
    assert gap_recovered(teacher=0.9, scratch=0.95, student=0.93) is None


@pytest.mark.slow
def test_a_distilled_student_beats_the_same_student_from_scratch_through_the_teacher(tmp_path):
    """Hinton's setting: a teacher trained on optdigits' 3,823 training images, a wide student that has only 197
    labelled digits. The teacher's soft targets carry what those labels cannot; with alpha 1 (labels only) the same
    training is the scratch one again, so the gain is the teacher's."""
    teacher = train_teacher(tmp_path, {"zoo": "small_cnn", "params": {"filters": [16, 32], "dense": 64}},
                            {"source": "optdigits"}, {"epochs": 15, "batch_size": 32, "learning_rate": 0.002})

    def students(alpha: float) -> dict:
        config = DistillConfig.model_validate({
            "student": {"zoo": "mlp", "params": {"hidden": [256]}}, "temperature": 4, "alpha": alpha, "mixup": 0,
            "data": {"source": "digits", "split": {"val": 0.2, "test": 0.69}},  # 197 train, 1,241 test images
            "train": {"epochs": 60, "batch_size": 32, "learning_rate": 0.005, "seed": 0},
        })
        return distill(config, {"model": teacher}, str(tmp_path / f"alpha-{alpha}"))["metrics"]

    taught, labels_only = students(alpha=0.1), students(alpha=1.0)
    assert taught["teacher_accuracy"] > 0.96
    assert taught["student_accuracy"] >= taught["scratch_accuracy"] + 0.008  # 10 of 1,241 test images or more
    assert taught["gap_recovered"] > 0.15 and taught["handed_on"] == "distilled"
    assert labels_only["scratch_accuracy"] == taught["scratch_accuracy"]  # the same seed, the same scratch student
    assert abs(labels_only["student_accuracy"] - labels_only["scratch_accuracy"]) <= 1 / 1241


@pytest.fixture(scope="module")
def bad_teacher(tmp_path_factory) -> str:
    """A teacher that has barely learnt (one epoch at a tiny learning rate): distilling from it hurts."""
    training = {**TRAIN, "epochs": 1, "learning_rate": 1e-5}
    return train_teacher(tmp_path_factory.mktemp("bad"), {"zoo": "mlp", "params": {"hidden": [64]}}, DATA, training)


def test_a_student_worse_than_scratch_on_validation_is_not_handed_on(bad_teacher, tmp_path, capsys):
    result = distill(distill_config([8], temperature=4, alpha=0.1, mixup=0), {"model": bad_teacher}, str(tmp_path / "s"))
    metrics = result["metrics"]
    assert metrics["teacher_accuracy"] < 0.3
    assert metrics["student_val_accuracy"] < metrics["scratch_val_accuracy"]
    assert metrics["handed_on"] == "scratch" and metrics["accuracy"] == metrics["scratch_accuracy"]
    meta = json.loads((tmp_path / "s" / "artifact.json").read_text())
    reason = meta["details"]["handed_on_reason"]
    assert f"the student from scratch scores {metrics['scratch_val_accuracy']:.4f}" in reason
    assert f"the distilled one {metrics['student_val_accuracy']:.4f}" in reason and "fallback_to_scratch: false" in reason
    assert f"distill: on validation {reason.removeprefix('on validation ')}" in capsys.readouterr().err
    saved = load_keras_model(tmp_path / "s" / "model.h5")
    data = load_dataset(DigitsData(source="digits"))
    assert np.mean(saved.predict(data.x_test, verbose=0).argmax(axis=1) == data.y_test) == pytest.approx(metrics["scratch_accuracy"])


def test_without_the_fallback_the_distilled_student_is_handed_on_even_when_worse(bad_teacher, tmp_path):
    config = distill_config([8], temperature=4, alpha=0.1, mixup=0, fallback_to_scratch=False)
    metrics = distill(config, {"model": bad_teacher}, str(tmp_path / "s"))["metrics"]
    assert metrics["student_val_accuracy"] < metrics["scratch_val_accuracy"]
    assert metrics["handed_on"] == "distilled" and metrics["accuracy"] == metrics["student_accuracy"]
    assert json.loads((tmp_path / "s" / "artifact.json").read_text())["details"]["handed_on_reason"] == "fallback_to_scratch is off"


def test_open_settings_are_tried_on_validation_against_the_default(teacher, tmp_path):
    """Temperature and mixup open, alpha set: the default temperature first, then the other two, without mixup; then
    the winner with mixup; each trial as long as trial_epochs. A setting other than the default wins only by scoring
    higher on validation."""
    distill(distill_config([8], alpha=0.5, epochs=2, trial_epochs=1), {"model": teacher}, str(tmp_path / "s"))
    details = json.loads((tmp_path / "s" / "artifact.json").read_text())["details"]
    trials = details["trials"]
    default = DEFAULTS["temperature"]
    assert details["default_settings"] == {"temperature": default, "alpha": 0.5, "mixup": DEFAULTS["mixup"]}
    others = [t for t in TEMPERATURES if t != default]
    assert [(t["temperature"], t["alpha"], t["mixup"]) for t in trials[:3]] == [(t, 0.5, DEFAULTS["mixup"]) for t in [default, *others]]
    temperature = details["temperature"]
    assert len(trials) == 4 and (trials[3]["temperature"], trials[3]["mixup"]) == (temperature, MIXUPS[1])
    accuracy = {(t["temperature"], t["mixup"]): t["val_accuracy"] for t in trials}
    if temperature != default:
        assert accuracy[(temperature, DEFAULTS["mixup"])] > accuracy[(default, DEFAULTS["mixup"])]
    if details["mixup"] != DEFAULTS["mixup"]:
        assert accuracy[(temperature, details["mixup"])] > accuracy[(temperature, DEFAULTS["mixup"])]
    assert details["alpha"] == 0.5 and details["chosen_on_validation"] == ["temperature", "mixup"]
    assert details["epochs_run"] == {"trials": 4, "distilled": 2, "scratch": 2}


def test_a_trial_replaces_the_default_only_when_clearly_better_on_validation():
    """On 400 validation examples, a net win of 4 examples (12 won, 8 lost) is noise; of 30 (34 won, 4 lost) it is not
    (paired, 2 standard errors)."""
    incumbent = np.zeros(400, dtype=bool)
    incumbent[:360] = True

    def challenger(won: int, lost: int) -> np.ndarray:
        answers = incumbent.copy()
        answers[360:360 + won] = True
        answers[:lost] = False
        return answers

    by_four, by_thirty = challenger(12, 8), challenger(34, 4)
    assert not clearly_better(by_four, incumbent)
    assert clearly_better(by_thirty, incumbent)
    assert not clearly_better(incumbent, by_thirty) and not clearly_better(incumbent, incumbent)


def test_the_choice_never_reads_the_test_split(teacher):
    """The same trials on data whose test labels are scrambled choose the same settings with the same scores."""
    config = distill_config([8], temperature=4, alpha=0.5, epochs=2, trial_epochs=1)  # mixup open: two trials
    data = load_dataset(DigitsData(source="digits"))
    scrambled = dataclasses.replace(data, x_test=data.x_test[::-1].copy(), y_test=np.roll(data.y_test, 1))
    model = load_keras_model(f"{teacher}/model.h5")
    assert choose_settings(config, data, model) == choose_settings(config, scrambled, model)


@pytest.mark.parametrize(
    "params, phrase",
    [
        ({}, "distill chooses temperature, alpha, mixup on the validation split, which is empty; set data.split.val "
             "(e.g. 0.1), or set temperature, alpha, mixup"),
        (FIXED, "distill compares the distilled and the scratch student on the validation split, which is empty; "
                "set data.split.val (e.g. 0.1), or set fallback_to_scratch: false"),
    ],
)
def test_an_empty_validation_split_is_refused_before_the_teacher_is_read(params, phrase, tmp_path):
    config = DistillConfig.model_validate(
        {"student": {"zoo": "mlp"}, "data": {"source": "digits", "split": {"val": 0}}, "train": TRAIN, **params}
    )
    with pytest.raises(UserError) as error:
        distill(config, {"model": str(tmp_path / "no-teacher")}, str(tmp_path / "out"))
    assert str(error.value) == phrase


@pytest.mark.parametrize(
    "params, phrase",
    [
        ("temperature: 0", "compress[0] (distill): temperature: temperature must be > 0 (got 0.0)"),
        ("temperature: -2", "temperature must be > 0 (got -2.0)"),
        ("alpha: 1.5", "compress[0] (distill): alpha: alpha must be in [0, 1] (got 1.5)"),
        ("alpha: -0.1", "alpha must be in [0, 1] (got -0.1)"),
        ("mixup: -0.5", "compress[0] (distill): mixup: Input should be greater than or equal to 0"),
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
