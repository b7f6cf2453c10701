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
