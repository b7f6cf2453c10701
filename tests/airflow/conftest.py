"""Airflow test setup: Airflow reads its home and DAGs folder when first imported, so both are set here, before any
test module imports it. Every test process gets its own AIRFLOW_HOME (a temporary folder) and SQLite metadata DB."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from tests.conftest import ROOT

AIRFLOW_HOME = tempfile.mkdtemp(prefix="modelpress-airflow-home-")
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    AIRFLOW_HOME=AIRFLOW_HOME,
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__UNIT_TEST_MODE="True",
)

@pytest.fixture(scope="session")
def airflow_db():
    """The metadata DB of this test process, created once (SQLite in AIRFLOW_HOME)."""
    from airflow.utils.db import initdb

    initdb()
    return AIRFLOW_HOME
