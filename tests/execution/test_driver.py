"""The task driver every mode runs through: run-parameter overrides and skip markers."""

from __future__ import annotations

import json

import pytest

from modelpress.common.errors import UserError
from modelpress.execution.driver import SKIP_MARKER, apply_overrides, parse_config, run_task

CONFIG = {"model": {"zoo": "mlp"}, "data": {"source": "digits"}}


def test_overrides_set_nested_fields_and_none_keeps_the_specs_value():
    values = apply_overrides(json.loads(json.dumps(CONFIG)), {"train.epochs": 7, "data.path": None, "model.zoo": "small_cnn"})
    assert values == {"model": {"zoo": "small_cnn"}, "data": {"source": "digits"}, "train": {"epochs": 7}}
    assert parse_config("train", json.dumps(CONFIG), {"train.epochs": 7}).train.epochs == 7


def test_an_override_the_step_has_no_field_for_is_refused_naming_the_key():
    with pytest.raises(UserError, match="train: unknown key 'epochz'; did you mean 'epochs'"):
        parse_config("train", json.dumps(CONFIG), {"train.epochz": 7})
    with pytest.raises(UserError, match="--set model.zoo.width: 'zoo' is not a section of this step's config"):
        parse_config("train", json.dumps(CONFIG), {"model.zoo.width": 7})


def test_a_task_whose_input_was_skipped_skips_and_marks_its_own_output(tmp_path):
    skipped = tmp_path / "artifacts" / "tensorrt_fp16"
    skipped.mkdir(parents=True)
    (skipped / SKIP_MARKER).write_text(json.dumps({"skipped": True, "reason": "no GPU"}))
    output = tmp_path / "validation" / "tensorrt_fp16"
    result = run_task("validate", {"name": "tensorrt_fp16", "data": {"source": "digits"}}, {"model": str(skipped)}, str(output))
    assert result == {"skipped": True, "reason": "its input 'model' was skipped"}
    # so what reads this output skips in turn, and the run report names the artifact that was not validated
    assert json.loads((output / SKIP_MARKER).read_text()) == result | {"artifact": "tensorrt_fp16"}
    assert [p.name for p in output.iterdir()] == [SKIP_MARKER]


def test_a_task_runs_after_its_after_input_and_skips_when_that_skipped_without_the_step_seeing_it(tmp_path):
    """A search rung's first tasks: they wait for the rung's search task and skip with it (no training is spent)."""
    from tests.search_validations import spec, write_validation

    config = {"search": spec({"max_size_ratio": 0.5}).model_dump()}
    validations = [write_validation(tmp_path, "train", "saved_model")]
    decided = tmp_path / "search" / "search_ptq"
    gate = run_task("search", config | {"rung": "ptq"}, {"validations": validations}, str(decided))
    assert not gate.get("skipped") and (decided / "search.json").is_file()  # the trained model is not 2x smaller: ptq runs
    # `after` is any step's input; the step itself never receives it (select would read it as a validation)
    result = run_task("select", config, {"validations": validations, "after": str(decided)}, str(tmp_path / "validation" / "select"))
    assert result["selected"] == "train" and result["blessed"] is False

    validations.append(write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=4_000))
    gate = run_task("search", config | {"rung": "qat"}, {"validations": validations}, str(tmp_path / "search" / "search_qat"))
    assert gate["reason"].startswith("not needed: ptq-tflite_int8 (rung ptq: quantize(mode=int8)) meets the target")
    waiting = tmp_path / "artifacts" / "qat-quantize"
    result = run_task("quantize", {"data": {"source": "digits"}}, {"model": validations[0], "after": str(tmp_path / "search" / "search_qat")}, str(waiting))
    assert result == {"skipped": True, "reason": "the task it runs after was skipped"}
    assert [p.name for p in waiting.iterdir()] == [SKIP_MARKER]
