"""tune: trials are recorded (hyperparameters and score, best first), best.json feeds train, and bad search spaces
are one-line errors from `modelpress check`."""

from __future__ import annotations

import json

import pytest

from modelpress.common.errors import UserError
from modelpress.contract.workflow import parse_workflow
from modelpress.execution.plan import build_plan
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.train.step import run as train
from modelpress.steps.tune.config import TuneConfig
from modelpress.steps.tune.step import run as tune
from tests.cli.test_main_bad_inputs import assert_one_line_error
from tests.conftest import TINY_WORKFLOW

MODEL = {"zoo": "mlp", "params": {"hidden": [16]}}
DATA = {"source": "digits"}
TRAIN = {"epochs": 2, "batch_size": 64, "learning_rate": 0.001}
# The spec's own learning rate (0.001), batch size (64) and hidden layer ([16]) are outside the space, so a train
# that used them instead of the tuned values cannot pass.
SPACE = {
    "learning_rate": {"min": 0.003, "max": 0.03, "sampling": "log"},
    "batch_size": [16, 32],
    "model.params.hidden": [[24], [40]],
}


def tune_config(**tune_section) -> TuneConfig:
    return TuneConfig.model_validate({"model": MODEL, "data": DATA, "train": TRAIN, "tune": tune_section})


@pytest.fixture(scope="module")
def random_search(tmp_path_factory) -> tuple[str, dict]:
    uri = str(tmp_path_factory.mktemp("tune") / "random")
    result = tune(tune_config(algorithm="random", max_trials=3, epochs=2, space=SPACE), {}, uri)
    return uri, result


def test_random_search_records_every_trial_best_first(random_search):
    uri, result = random_search
    meta = json.loads(open(f"{uri}/artifact.json").read())
    trials = meta["details"]["trials"]
    assert len(trials) == meta["metrics"]["trials"] == 3
    scores = [t["val_accuracy"] for t in trials]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    for trial in trials:
        values = trial["hyperparameters"]
        assert set(values) == set(SPACE) and trial["status"] == "COMPLETED" and trial["epochs"] == 2
        assert 0.003 <= values["learning_rate"] <= 0.03
        assert values["batch_size"] in (16, 32) and values["model.params.hidden"] in ([24], [40])
    assert len({t["hyperparameters"]["learning_rate"] for t in trials}) == 3  # three different configurations
    best = json.loads(open(f"{uri}/best.json").read())
    top = trials[0]["hyperparameters"]
    assert best["train"] == {"learning_rate": top["learning_rate"], "batch_size": top["batch_size"]}
    assert best["model"] == {"params": {"hidden": top["model.params.hidden"]}}
    assert best["score"] == meta["metrics"]["best_val_accuracy"] == trials[0]["val_accuracy"]
    assert result["best"] == best and meta["format"] == "hyperparameters"


def test_train_uses_the_tuned_configuration(random_search, tmp_path):
    uri, _ = random_search
    best = json.loads(open(f"{uri}/best.json").read())
    config = TrainConfig.model_validate({"model": MODEL, "data": DATA, "train": TRAIN})
    result = train(config, {"hyperparameters": uri}, str(tmp_path / "train"))
    details = json.loads((tmp_path / "train" / "artifact.json").read_text())["details"]
    assert details["train"]["learning_rate"] == best["train"]["learning_rate"] != TRAIN["learning_rate"]
    assert details["train"]["batch_size"] == best["train"]["batch_size"] != TRAIN["batch_size"]
    assert details["train"]["epochs"] == TRAIN["epochs"]  # not in the space: the spec's value
    assert details["model"]["params"]["hidden"] == best["model"]["params"]["hidden"]
    hidden = best["model"]["params"]["hidden"][0]
    assert result["metrics"]["params"] == 64 * hidden + hidden + hidden * 10 + 10  # the model was built with it


def test_hyperband_continues_the_promoted_trials(tmp_path):
    config = tune_config(algorithm="hyperband", epochs=2, factor=2, space={"learning_rate": SPACE["learning_rate"]})
    result = tune(config, {}, str(tmp_path / "hb"))
    trials = json.loads((tmp_path / "hb" / "artifact.json").read_text())["details"]["trials"]
    assert result["metrics"]["trials"] == len(trials) == 5  # bracket 1: 2 trials, 1 promoted; bracket 0: 2 trials
    first_round = {t["hyperparameters"]["learning_rate"]: t["val_accuracy"] for t in trials if t["epochs"] == 1}
    promoted = [t for t in trials if t["epochs"] == 2 and t["hyperparameters"]["learning_rate"] in first_round]
    assert len(first_round) == 2 and len(promoted) == 1
    # It resumed from its round-one weights: a restart would train 1 epoch from the same seed and score the same.
    assert promoted[0]["val_accuracy"] > first_round[promoted[0]["hyperparameters"]["learning_rate"]] + 0.03


def test_bayesian_search_runs_max_trials(tmp_path):
    result = tune(tune_config(algorithm="bayesian", max_trials=2, epochs=1, space={"learning_rate": SPACE["learning_rate"]}), {}, str(tmp_path / "b"))
    assert result["metrics"]["trials"] == 2


def test_a_diverging_trial_is_recorded_as_failed_and_ranked_last(tmp_path):
    config = TuneConfig.model_validate(
        {"model": MODEL, "data": DATA, "train": {**TRAIN, "optimizer": "sgd"},
         "tune": {"objective": "val_loss", "max_trials": 2, "epochs": 1, "space": {"learning_rate": [1.0e30, 0.01]}}}
    )
    result = tune(config, {}, str(tmp_path / "t"))
    trials = json.loads((tmp_path / "t" / "artifact.json").read_text())["details"]["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "FAILED"]
    assert trials[1]["val_loss"] is None and "val_loss is nan: training diverged" in trials[1]["error"]
    assert result["best"]["train"] == {"learning_rate": 0.01} and result["best"]["score"] == trials[0]["val_loss"]


def test_a_model_value_the_builder_rejects_fails_before_any_trial(tmp_path):
    config = tune_config(max_trials=2, epochs=1, space={"model.params.hidden": [[16], [-3]]})
    with pytest.raises(UserError, match=r"tune.space.model.params.hidden: the model cannot be built with \[-3\]"):
        tune(config, {}, str(tmp_path / "t"))
    assert not (tmp_path / "t").exists()


def test_plan_runs_tune_first_and_feeds_train():
    workflow = parse_workflow(
        {"name": "t", "model": MODEL, "data": DATA, "tune": {"max_trials": 2, "space": {"batch_size": [16, 32]}}}
    )
    plan = build_plan(workflow)
    assert [t.id for t in plan[:2]] == ["tune", "train"]
    assert plan[0].output_kind == "hyperparameters" and plan[0].artifact is None
    assert plan[1].inputs == {"hyperparameters": "tune"}
    assert all(t.inputs.get("model") != "tune" for t in plan)  # nothing validates the search result as a model
    assert build_plan(parse_workflow({"name": "t", "model": MODEL, "data": DATA}))[0].inputs == {}


@pytest.mark.parametrize(
    "tune_section, phrase",
    [
        ("{space: {learnig_rate: [0.01]}}", "tune.space: unknown hyperparameter 'learnig_rate'; did you mean 'learning_rate'?"),
        ("{space: {learning_rate: {min: 0.01, max: 0.001}}}", "tune.space: learning_rate: min 0.01 >= max 0.001"),
        ("{space: {batch_size: []}}", "tune.space: batch_size: no choices; list at least one value"),
        ("{space: {learning_rate: {min: 0, max: 0.1, sampling: log}}}", "learning_rate: log sampling needs min > 0"),
        ("{space: {learning_rate: {mn: 0.001, max: 0.1}}}", "tune.space: learning_rate: unknown key 'mn'; did you mean 'min'?"),
        ("{space: {learning_rate: 0.01}}", "learning_rate: give a range {min: ..., max: ...} or a list of choices"),
        ("{space: {optimizer: [adam, adagrad]}}", "optimizer: 'adagrad' is not a valid optimizer"),
        ("{space: {batch_size: [0, 32]}}", "batch_size: 0 is not a valid batch_size"),
        ("{space: {}}", "tune.space: no hyperparameters to search"),
        ("{space: {model.params.hiden: [[8]]}}", "tune: space: model.params.hiden is not a parameter of mlp; did you mean 'hidden'?"),
        ("{algorithm: grid, space: {batch_size: [32]}}", "tune.algorithm: Input should be 'random', 'bayesian' or 'hyperband'"),
        ("{algorithm: hyperband, max_trials: 5, space: {batch_size: [32]}}", "max_trials does not apply to hyperband"),
        ("{algorithm: random, factor: 2, space: {batch_size: [32]}}", "factor applies to hyperband only"),
        ("{max_trials: 0, space: {batch_size: [32]}}", "tune.max_trials: Input should be greater than or equal to 1"),
    ],
)
def test_bad_search_spaces_fail_check_in_one_line(cli, tmp_path, tune_section, phrase):
    path = tmp_path / "wf.yaml"
    path.write_text(TINY_WORKFLOW + f"tune: {tune_section}\n")
    assert_one_line_error(cli("check", str(path)), phrase)


def test_tune_needs_a_validation_split(cli, tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(TINY_WORKFLOW.replace("source: digits", "source: digits\n  split: {val: 0}") + "tune: {space: {batch_size: [32]}}\n")
    assert_one_line_error(cli("check", str(path)), "tune ranks trials on the validation split, which is empty")


def test_step_command_rejects_a_bad_space(cli, tmp_path):
    config = {"model": MODEL, "data": DATA, "tune": {"space": {"learning_rate": {"min": 0.1, "max": 0.1}}}}
    result = cli("step", "tune", "--config", json.dumps(config), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, "step tune --config", "min 0.1 >= max 0.1")
    assert not (tmp_path / "out").exists()
