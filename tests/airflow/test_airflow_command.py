"""`modelpress compile airflow` as a user runs it in a DAG repository's checkout: its output and nothing else."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_compile_airflow_prints_no_warning_and_writes_the_default_workflows_folder(cli, tmp_path):
    """Every warning shown (PYTHONWARNINGS=always also shows the DeprecationWarnings Python hides by default), in an
    Airflow home of its own as a first run has."""
    env = {"PYTHONWARNINGS": "always", "AIRFLOW_HOME": str(tmp_path / "airflow-home"), "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    result = cli("compile", "airflow", str(ROOT / "examples" / "digits_mlp.yaml"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"{ROOT / 'examples' / 'digits_mlp.yaml'} -> dags/workflows/digits_mlp.yaml: DAG 'digits_mlp'")
    assert (tmp_path / "dags" / "workflows" / "digits_mlp.yaml").read_text() == (ROOT / "examples" / "digits_mlp.yaml").read_text()
