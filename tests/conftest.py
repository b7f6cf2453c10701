"""Shared fixtures: a real S3 endpoint over HTTP (moto's server mode), tiny workflows, CLI runners."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]

# The Kubernetes connection a deployment configures; building a pod reads it but never calls the API server.
KUBE_CONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "ml",
    "clusters": [{"name": "ml", "cluster": {"server": "https://kubernetes.invalid:6443"}}],
    "contexts": [{"name": "ml", "context": {"cluster": "ml", "user": "runner"}}],
    "users": [{"name": "runner", "user": {"token": "unused"}}],
}  # fmt: skip

# The Python of the main environment (.venv: TensorFlow, kfp), which runs steps and kfp compiles: this one, except in
# the Airflow run, where make test points MODELPRESS_STEP_PYTHON at .venv's (the Airflow adapter reads it too).
STEP_PYTHON = os.environ.get("MODELPRESS_STEP_PYTHON") or sys.executable


def pytest_ignore_collect(collection_path, config):
    """Airflow's test modules (test_airflow_*.py) import Airflow, the others TensorFlow or kfp, and no environment holds
    both: -m airflow (in .venv-airflow) collects only the former, -m "not airflow ..." (in .venv) only the latter.
    Without either, every module is collected, and one whose orchestrator is missing fails to import."""
    if not collection_path.name.startswith("test_") or collection_path.suffix != ".py":
        return None
    expression = config.option.markexpr or ""
    if re.search(r"\bnot\s+airflow\b", expression):
        return collection_path.name.startswith("test_airflow") or None
    if re.search(r"\bairflow\b", expression):
        return not collection_path.name.startswith("test_airflow") or None
    return None


pytest_plugins = ("tests.container_fixtures",)  # the Docker engine and built images, for modules marked containers
KINDS = ("integration", "containers")  # a module marks its kind; a module marking neither holds unit tests


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name.startswith("test_airflow"):
            item.add_marker(pytest.mark.airflow)
        if not any(item.get_closest_marker(kind) for kind in KINDS):
            item.add_marker(pytest.mark.unit)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a subprocess on loopback, once it accepts connections: the process and its endpoint."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("moto server did not start")


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server; the same boto3 code as production talks to it over HTTP."""
    process, endpoint = start_moto()
    yield endpoint
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A fresh bucket on the test endpoint, with the standard AWS variables pointing at it. Yields the bucket name."""
    import boto3

    from modelpress.io import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage.configure(None)
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield bucket
    storage.configure(None)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600, python: str = sys.executable
) -> subprocess.CompletedProcess:
    """Run the installed `modelpress` command as a user would (in `python`'s environment: this one by default)."""
    return subprocess.run(
        [python, "-m", "modelpress", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def cli():
    return run_cli


def step_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`modelpress` in the main environment, with TensorFlow and kfp (from the Airflow run too: STEP_PYTHON)."""
    return run_cli(*args, python=STEP_PYTHON, **kwargs)


TINY_WORKFLOW = """\
name: tiny
model:
  zoo: mlp
  params: {hidden: [32]}
data:
  source: digits
train:
  epochs: 3
  batch_size: 64
evaluation:
  latency_runs: 5
  warmup_runs: 1
"""


@pytest.fixture
def tiny_workflow(tmp_path) -> Path:
    """A workflow that trains in a couple of seconds; tests append or replace sections."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_WORKFLOW)
    return path


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Two validated runs of a tiny model with different weights (`a`: 6 epochs, `b`: 1 epoch), each with a
    SavedModel and a TFLite artifact, plus `a`'s SavedModel validated again against an unreachable gate
    (`unblessed`). Shared by the push, deploy and fault tests: train once per test process."""
    root = tmp_path_factory.mktemp("trained")
    runs = {"a": (6, 0), "b": (1, 1)}
    processes = []
    for name, (epochs, seed) in runs.items():
        workflow = TINY_WORKFLOW.replace("epochs: 3", f"epochs: {epochs}\n  seed: {seed}") + "targets: [saved_model, tflite_fp32]\n"
        (root / f"{name}.yaml").write_text(workflow)
        command = [sys.executable, "-m", "modelpress", "run", str(root / f"{name}.yaml"), "--out", str(root / name)]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT))
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
    config = '{"name": "train", "data": {"source": "digits"}, "gates": {"min_accuracy": 0.999}, "evaluation": {"latency_runs": 5}}'
    result = run_cli("step", "validate", "--config", config, "--input", f"model={root / 'a/artifacts/train'}",
                     "--output", str(root / "unblessed"))
    assert result.returncode == 0, result.stderr
    return {**{name: root / name for name in runs}, "unblessed": root / "unblessed"}


@pytest.fixture
def validated_copy(trained_runs, tmp_path):
    """A private copy of run `a`'s validated artifacts: {name: (artifact folder, validation folder)}, each blessing
    pointing at its copied artifact (the content digest does not depend on where an artifact is)."""
    copies = {}
    for name in ("train", "tflite_fp32"):
        artifact, validation = tmp_path / "copy" / "artifacts" / name, tmp_path / "copy" / "validation" / name
        shutil.copytree(trained_runs["a"] / "artifacts" / name, artifact)
        shutil.copytree(trained_runs["a"] / "validation" / name, validation)
        blessing = json.loads((validation / "blessing.json").read_text())
        (validation / "blessing.json").write_text(json.dumps({**blessing, "artifact": str(artifact)}))
        copies[name] = (artifact, validation)
    return copies


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
