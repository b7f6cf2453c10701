"""`modelpress new`: every template gives a workflow that `check` accepts and that compiles for Kubeflow
(tests/airflow/test_airflow_new_workflow.py: and that is a DAG as soon as it is in the workflows folder)."""

from __future__ import annotations

import pytest
from kfp import compiler

from modelpress.common.errors import UserError
from modelpress.execution.plan import load_workflow
from modelpress.kfp.compiler import build_pipeline
from tests.adapter_cases import draft_every_template, uses_builder, with_image_tag

pytestmark = pytest.mark.integration


def test_every_template_checks_and_compiles(cli, tmp_path):
    for path in draft_every_template(cli, tmp_path / "drafts").values():
        checked = cli("check", str(path))
        assert checked.returncode == 0, checked.stderr
        if uses_builder(path):  # the team's package must be in the images first
            with pytest.raises(UserError, match="is not in the stock images; build images that carry it"):
                build_pipeline(load_workflow(path))
            with_image_tag(path)
        compiled = tmp_path / f"{path.stem}.pipeline.yaml"
        compiler.Compiler().compile(build_pipeline(load_workflow(path)), str(compiled))
        assert compiled.stat().st_size > 1000


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["Bad Name"], "workflow name 'Bad Name' is not valid; use 1-63 lower-case letters, digits, '-' or '_'"),
        (["ok", "--from", "tabular"], "unknown template 'tabular'; did you mean 'tabular-mlp'?"),
    ],
)
def test_new_refuses_bad_name_and_unknown_template(arguments, message, cli, tmp_path):
    result = cli("new", *arguments, "-o", str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip() == f"modelpress: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_new_does_not_overwrite_an_existing_workflow(cli, tmp_path):
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    result = cli("new", "mine", "-o", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"modelpress: error: {tmp_path / 'mine.yaml'} already exists; pass --overwrite to replace it or choose another name"
    assert (tmp_path / "mine.yaml").read_text() == "name: mine\n"
