"""Whole runs on streamed shards: every step (train, prune's fine-tuning, INT8 calibration, validate) reads the S3
shards as a stream; a damaged shard stops the run with one line and nothing published; two worker processes on
loopback each read their own shards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from modelpress.io import storage
from tests.conftest import ROOT, free_port, run_cli
from tests.io.test_streaming import flip_a_byte, write_digits_shards

pytestmark = pytest.mark.integration

WORKFLOW = """\
name: streamed
model:
  zoo: mlp
  params: {{hidden: [32]}}
data:
  source: tfrecord
  path: {path}
  shape: [8, 8, 1]
  streaming: {{shuffle_buffer: 256, parallel_reads: 2}}
train:
  epochs: 6
  batch_size: 64
  learning_rate: 0.01
compress:
  - {{technique: prune, method: magnitude, sparsity: 0.5, epochs: 1}}
targets: [saved_model, tflite_int8]
gates: {{min_accuracy: 0.85}}
evaluation:
  latency_runs: 5
  warmup_runs: 1
push: {{}}
"""


def test_a_streamed_run_publishes_and_a_damaged_shard_publishes_nothing(s3, tmp_path):
    root = f"s3://{s3}/digits"
    write_digits_shards(root)
    workflow = tmp_path / "streamed.yaml"
    workflow.write_text(WORKFLOW.format(path=f"{root}/part-*.tfrecord"))
    environment = {"MODELPRESS_CACHE": str(tmp_path / "cache")}
    done = run_cli("run", str(workflow), "--out", str(tmp_path / "good"), env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "good" / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["artifacts"]}
    assert set(rows) == {"train", "prune", "tflite_int8"}
    assert all(row["blessed"] for row in rows.values()), {name: row["reasons"] for name, row in rows.items()}
    blessings = [json.loads((tmp_path / "good" / "validation" / name / "blessing.json").read_text()) for name in rows]
    test_examples = {blessing["metrics"]["test_examples"] for blessing in blessings}
    assert len(test_examples) == 1 and 300 < test_examples.pop() < 420  # the key-hash test split, the same for each
    train = json.loads((tmp_path / "good" / "artifacts" / "train" / "artifact.json").read_text())
    assert train["data_hash"] == train["details"]["data_digest"]  # lineage and cache key: one digest, from the listing
    assert "tfrecord (streamed from 6 files)" in done.stderr
    int8 = json.loads((tmp_path / "good" / "artifacts" / "tflite_int8" / "artifact.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", int8["calibration_hash"])
    assert (tmp_path / "good" / "registry" / "streamed" / "1" / "manifest.json").is_file()

    flip_a_byte(storage.join(root, "part-004.tfrecord"))
    failed = run_cli("run", str(workflow), "--out", str(tmp_path / "bad"), env=environment)
    assert failed.returncode != 0
    (last,) = [line for line in failed.stderr.splitlines() if line.startswith("modelpress: error:")]
    assert f"{root}/part-004.tfrecord is not readable TFRecord data" in last
    assert not (tmp_path / "bad" / "registry").exists() and not (tmp_path / "bad" / "artifacts" / "train").exists()


@pytest.mark.slow
def test_two_workers_each_read_their_own_shards(tmp_path):
    write_digits_shards(str(tmp_path / "shards"))
    config = {
        "model": {"zoo": "mlp", "params": {"hidden": [32]}},
        "data": {"source": "tfrecord", "path": str(tmp_path / "shards"), "shape": [8, 8, 1], "streaming": {"shuffle_buffer": 128}},
        "train": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01, "workers": 2},
    }
    ports = [free_port(), free_port()]
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
    processes = {}
    for kind in ("chief", "worker"):
        environment = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": 0}}),
            "MODELPRESS_CACHE": str(tmp_path / f"cache-{kind}"),
        }
        command = [sys.executable, "-m", "modelpress", "step", "train", "--config", json.dumps(config)]
        command += ["--output", str(tmp_path / "train"), "--result", str(tmp_path / f"{kind}.json")]
        processes[kind] = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        logs = {kind: process.communicate(timeout=300)[1] for kind, process in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
    read = {}
    for kind, process in processes.items():
        assert process.returncode == 0, f"{kind}: {logs[kind][-2000:]}"
        (line,) = {line for line in logs[kind].splitlines() if "train: worker" in line}
        read[kind] = set(re.search(r"reads \d+ of 6 shards: (.*)$", line).group(1).split(", "))
    assert read["chief"].isdisjoint(read["worker"])
    assert read["chief"] | read["worker"] == {f"part-{n:03d}.tfrecord" for n in range(6)}
    chief, worker = (json.loads((tmp_path / f"{kind}.json").read_text()) for kind in ("chief", "worker"))
    assert chief["metrics"]["accuracy"] == worker["metrics"]["accuracy"] > 0.8
