"""`modelpress new`: every template gives a workflow that `check` accepts, that compiles for Kubeflow and that is a
DAG as soon as it is in the workflows folder."""

from __future__ import annotations

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from kfp import compiler

from dags.modelpress_airflow import MODE_ENV, WORKFLOWS_ENV
from modelpress._core.errors import UserError
from modelpress._core.newflow import TEMPLATES
from modelpress._core.spec import load_workflow
from pipelines.compiler import build_pipeline
from tests.conftest import ROOT


def test_every_template_checks_compiles_and_becomes_a_dag(cli, tmp_path, monkeypatch):
    drafts, folder = tmp_path / "drafts", tmp_path / "workflows"
    names = {template: f"my-{template}" for template in TEMPLATES}
    for template, name in names.items():
        result = cli("new", name, "--from", template, "-o", str(drafts))
        assert result.returncode == 0, result.stderr
        path = drafts / f"{name}.yaml"
        assert result.stdout.strip() == f"wrote {path}; next: modelpress check {path}"
        text = path.read_text()
        assert text.startswith(f"# {name}: ") and yaml.safe_load(text)["name"] == name
        checked = cli("check", str(path))
        assert checked.returncode == 0, checked.stderr
        if yaml.safe_load(text)["model"].get("builder"):  # the team's package must be in the images first
            with pytest.raises(UserError, match="is not in the stock images; build images that carry it"):
                build_pipeline(load_workflow(path))
            assert "# cluster:\n#   image_tag: " in text  # the template says where the derived tag goes
            path.write_text(text.replace("# cluster:\n#   image_tag: ", "cluster:\n  image_tag: "))
        compiler.Compiler().compile(build_pipeline(load_workflow(path)), str(tmp_path / f"{name}.pipeline.yaml"))
        assert (tmp_path / f"{name}.pipeline.yaml").stat().st_size > 1000

    installed = cli("compile", "airflow", *(str(drafts / f"{n}.yaml") for n in names.values()), "-o", str(folder))
    assert installed.returncode == 0, installed.stderr
    assert "DAG 'my-image-classifier' (@weekly), tasks train, validate_train" in installed.stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.yaml" for n in names.values())

    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(names.values())
    assert bag.dags["my-image-classifier"].schedule == "@weekly"


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
