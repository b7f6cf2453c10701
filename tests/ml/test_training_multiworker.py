"""Multi-worker training for real: two `modelpress step train` processes on loopback, each with its own TF_CONFIG
(what the TFJob operator gives each replica), train one model together with MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelpress.io.artifacts import open_artifact
from tests.conftest import ROOT, free_port, run_cli

pytestmark = pytest.mark.integration

CONFIG = {
    "model": {"zoo": "mlp", "params": {"hidden": [32]}},
    "data": {"source": "digits"},
    "train": {"epochs": 2, "batch_size": 128, "learning_rate": 0.01, "workers": 2},
}
CONTRACT_FILES = {"artifact.json", "model.h5", "saved_model", "initial.weights.h5"}


def top_level(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def single_worker(tmp_path_factory):
    """workers: 2 without TF_CONFIG (a local `modelpress run`): one process trains, says so and records it."""
    output = tmp_path_factory.mktemp("single") / "train"
    done = run_cli("step", "train", "--config", json.dumps(CONFIG), "--output", str(output), timeout=300)
    assert done.returncode == 0, done.stderr
    return output, done


@pytest.mark.slow
def test_two_workers_on_loopback_train_one_model_with_the_single_worker_contract(tmp_path, single_worker):
    output = tmp_path / "train"
    ports = [free_port(), free_port()]
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
    processes = {}
    for kind in ("chief", "worker"):
        environment = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": 0}})}
        command = [sys.executable, "-m", "modelpress", "step", "train", "--config", json.dumps(CONFIG)]
        command += ["--output", str(output), "--result", str(tmp_path / f"{kind}.json")]
        processes[kind] = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        logs = {kind: process.communicate(timeout=240)[1] for kind, process in processes.items()}
    finally:
        for process in processes.values():
            process.kill()  # no-op once finished; a worker whose peer died would wait forever
    for kind, process in processes.items():
        assert process.returncode == 0, f"{kind}: {logs[kind][-2000:]}"
        assert "2 replicas in sync" in logs[kind]  # the collective group formed across both processes

    chief, worker = (json.loads((tmp_path / f"{kind}.json").read_text()) for kind in ("chief", "worker"))
    assert (chief["task"], chief["wrote_output"]) == ("chief:0", True)
    assert (worker["task"], worker["wrote_output"]) == ("worker:0", False)
    # Synchronous training: both replicas end with the same weights, so the same test accuracy.
    assert chief["metrics"]["accuracy"] == worker["metrics"]["accuracy"] > 0.3

    reference, _ = single_worker
    assert top_level(output) == top_level(reference) == CONTRACT_FILES
    with open_artifact(str(output)) as (folder, meta), open_artifact(str(reference)) as (_, reference_meta):
        assert (meta.format, meta.step, meta.model_path) == (reference_meta.format, "train", "saved_model")
        assert meta.metrics.keys() == reference_meta.metrics.keys() >= {"accuracy", "params", "train_seconds"}
        assert meta.metrics["params"] == reference_meta.metrics["params"]
        assert (meta.details["workers"], meta.details["replicas_in_sync"]) == (2, 2)
        assert meta.details["epochs_run"] == 2 and "note" not in meta.details
        assert (folder / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_workers_without_tf_config_train_in_one_process_and_say_so(single_worker):
    output, done = single_worker
    note = "train.workers is 2 but TF_CONFIG names no cluster: trained in this one process"
    assert note in done.stderr
    with open_artifact(str(output)) as (_, meta):
        assert (meta.details["workers"], meta.details["replicas_in_sync"]) == (1, 1)
        assert meta.details["note"].startswith(note)


def test_parameter_servers_in_tf_config_are_refused(tmp_path):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    done = run_cli(
        "step", "train", "--config", json.dumps(CONFIG), "--output", str(tmp_path / "train"),
        env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("modelpress: error: TF_CONFIG names parameter servers")
    assert not (tmp_path / "train").exists()
