"""`modelpress new`: every template is a DAG as soon as `modelpress compile airflow` puts it in the workflows folder
(tests/cli/test_newflow.py: and it checks and compiles for Kubeflow)."""

from __future__ import annotations

import pytest
from airflow.dag_processing.dagbag import DagBag

from modelpress.airflow.dag_factory import WORKFLOWS_ENV
from modelpress.airflow.operators import MODE_ENV
from tests.adapter_cases import draft_every_template, uses_builder, with_image_tag
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_every_template_becomes_a_dag(cli, tmp_path, monkeypatch):
    drafts, folder = tmp_path / "drafts", tmp_path / "workflows"
    paths = draft_every_template(cli, drafts)
    for path in paths.values():
        if uses_builder(path):
            with_image_tag(path)
    installed = cli("compile", "airflow", *map(str, paths.values()), "-o", str(folder))
    assert installed.returncode == 0, installed.stderr
    assert "DAG 'my-image-classifier' (@weekly), tasks train, validate_train" in installed.stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())

    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {p.stem for p in paths.values()}
    assert bag.dags["my-image-classifier"].schedule == "@weekly"
