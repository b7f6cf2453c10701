"""The Kubeflow half of the adapters' shared checks: bad workflows and credentials fail the compile with one line
(tests/airflow/test_airflow_parity.py checks the Airflow DAG, and that both adapters agree task for task)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from kfp import compiler

from modelpress.cli.main import main
from modelpress.common.errors import UserError
from modelpress.execution.plan import load_workflow
from modelpress.kfp.compiler import build_pipeline
from modelpress.kfp.components import step_component
from modelpress.steps.catalog import STEPS
from tests.adapter_cases import (
    BAD_WORKFLOWS,
    NO_IMAGE_CARRIES,
    assert_bad_workflow_fails_compile_with_one_line,
    assert_credentials_are_refused_and_never_echoed,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("problem", BAD_WORKFLOWS)
def test_bad_workflow_fails_compile_with_one_line(problem, capsys, tmp_path):
    assert_bad_workflow_fails_compile_with_one_line("kfp", problem, capsys, tmp_path)


def test_step_needing_what_no_image_carries_fails_the_pipeline_compile(monkeypatch, adapter_workflow, tmp_path):
    monkeypatch.setitem(STEPS, "validate", dataclasses.replace(STEPS["validate"], extras=("tf", "cuda")))
    step_component.cache_clear()  # components are cached per step name; this one must be built again
    try:
        with pytest.raises(UserError, match=re.escape(NO_IMAGE_CARRIES)):
            compiler.Compiler().compile(build_pipeline(load_workflow(adapter_workflow())), str(tmp_path / "p.yaml"))
    finally:
        step_component.cache_clear()


def test_credentials_in_a_workflow_are_refused_and_never_echoed(capsys, tmp_path):
    assert_credentials_are_refused_and_never_echoed("kfp", capsys, tmp_path)


def test_a_credential_of_the_wrong_type_is_not_echoed(capsys, tmp_path):
    path = tmp_path / "creds.yaml"
    path.write_text("name: creds\nmodel: {zoo: mlp}\ndata: {source: digits}\nstorage: {access_key_id: [AKIAEXAMPLE123]}\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "storage.access_key_id" in err and "a value not shown: it is a credential" in err and "AKIAEXAMPLE123" not in err
