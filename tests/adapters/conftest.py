"""Adapter test setup: Airflow reads its home and DAGs folder when first imported, so both are set here, before any
test module imports it. Every test process gets its own AIRFLOW_HOME (a temporary folder) and SQLite metadata DB."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

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

TINY = """\
name: {name}
model:
  zoo: mlp
  params: {{hidden: [32]}}
data:
  source: digits
train:
  epochs: 5
  batch_size: 32
targets: {targets}
gates: {{min_accuracy: 0.6}}
evaluation:
  latency_runs: 5
  warmup_runs: 1
"""

DEFAULT_TARGETS = "[saved_model, tflite_fp32, {format: tensorrt_fp16, on_unavailable: skip}]"


@pytest.fixture
def adapter_workflow(tmp_path):
    """Writes a workflow that trains in seconds to about 85% test accuracy. Its default targets fan out to TFLite and
    to TensorRT, which skips on this machine (no GPU). `extra` is appended YAML (push, serving, schedule...)."""

    def write(name: str = "tiny", extra: str = "", targets: str = DEFAULT_TARGETS, folder: Path | None = None) -> Path:
        path = (folder or tmp_path) / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TINY.format(name=name, targets=targets) + extra)
        return path

    return write


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata DB of this test process, created once (SQLite in AIRFLOW_HOME)."""
    from airflow.utils.db import initdb

    initdb()
    return AIRFLOW_HOME
