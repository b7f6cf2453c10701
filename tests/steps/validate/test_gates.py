"""Every gate rejects a model that misses it and passes one that meets it. The test recomputes what each gate
measures from the saved evidence (predictions.npy against the digits labels, the artifact's files, the latency
samples), not from the product's own numbers, and puts the threshold just on either side. A chain of two
compression steps shows drops are measured against the trained model, not the step before."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelpress.contract.data_sources import DigitsData
from modelpress.io.data import load_dataset
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run as push
from modelpress.steps.validate.config import ValidateConfig
from modelpress.steps.validate.step import run as validate

pytestmark = pytest.mark.integration

EVALUATION = {"latency_runs": 5, "warmup_runs": 1}
MARGIN = 1e-6


def predictions(validation: Path) -> np.ndarray:
    return np.load(io.BytesIO((validation / "predictions.npy").read_bytes()), allow_pickle=False)


def per_class(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([np.mean(predicted[truth == c] == c) for c in range(10)])


@pytest.fixture(scope="module")
def evidence(trained_runs, tmp_path_factory) -> dict:
    """What each gate measures, recomputed from saved files: model `b` (1 epoch) judged against `a` (6 epochs) as
    parent, baseline and published model."""
    root = tmp_path_factory.mktemp("gates")
    registry = str(root / "registry")
    push(PushConfig(push={"uri": registry, "model_name": "tiny"}), {"validations": [str(trained_runs["a"] / "validation" / "train")]}, str(root / "push"))
    truth = load_dataset(DigitsData(source="digits")).y_test
    mine, theirs = predictions(trained_runs["b"] / "validation" / "train"), predictions(trained_runs["a"] / "validation" / "train")
    saved_model = trained_runs["b"] / "artifacts" / "train" / "saved_model"
    samples = json.loads((trained_runs["b"] / "validation" / "train" / "evaluation.json").read_text())["latency_ms_samples"]
    return {
        "registry": registry,
        "min_accuracy": float(np.mean(mine == truth)),
        "max_drop": float(np.mean(theirs == truth) - np.mean(mine == truth)),
        "max_class_drop": float(np.nanmax(per_class(theirs, truth) - per_class(mine, truth))),
        "min_agreement": float(np.mean(mine == theirs)),
        "max_size_bytes": sum(p.stat().st_size for p in saved_model.rglob("*") if p.is_file()),
        "max_latency_ms": float(np.percentile(samples, 95)),
        "max_drop_vs_serving": float(np.mean(theirs == truth) - np.mean(mine == truth)),
    }


def threshold(gate: str, value: float, verdict: str) -> float:
    """Just past the measured value on the rejecting side, or just inside it on the passing side. Latency varies
    between runs, so its thresholds are far apart instead."""
    if gate == "max_latency_ms":
        return 1e-6 if verdict == "reject" else 1e6
    if gate == "max_size_bytes":
        return value - 1 if verdict == "reject" else value
    lower_is_worse = gate.startswith("min_")
    step = MARGIN if (verdict == "reject") == lower_is_worse else -MARGIN
    return min(max(value + step, 0.0), 1.0)


@pytest.mark.parametrize("verdict", ["reject", "pass"])
@pytest.mark.parametrize("gate", ["min_accuracy", "max_drop", "max_class_drop", "min_agreement", "max_size_bytes", "max_latency_ms", "max_drop_vs_serving"])
def test_each_gate_rejects_and_passes(trained_runs, evidence, tmp_path, gate, verdict):
    value = evidence[gate]
    assert gate in ("max_latency_ms", "max_size_bytes") or 0 < value < 1  # the threshold can sit on either side
    config = ValidateConfig(
        name="train", data={"source": "digits"}, evaluation=EVALUATION, gates={gate: threshold(gate, value, verdict)},
        push={"uri": evidence["registry"], "model_name": "tiny"},
    )
    parent = str(trained_runs["a"] / "validation" / "train")
    validate(config, {"model": str(trained_runs["b"] / "artifacts" / "train"), "parent": parent}, str(tmp_path / "v"))
    blessing = json.loads((tmp_path / "v" / "blessing.json").read_text())
    (check,) = blessing["gates"]
    assert check["gate"] == gate and blessing["blessed"] is (verdict == "pass"), blessing["reasons"]
    if gate != "max_latency_ms":
        assert check["value"] == pytest.approx(value, abs=1e-9)
    assert (len(blessing["reasons"]) == 1) is (verdict == "reject")


CHAIN = """\
name: chain
model: {zoo: mlp, params: {hidden: [32]}}
data: {source: digits}
train: {epochs: 4, batch_size: 64}
compress:
  - {technique: prune, sparsity: 0.5, epochs: 1}
  - {technique: cluster, clusters: 4, epochs: 1}
gates: {max_drop: 0.5}
evaluation: {latency_runs: 5, warmup_runs: 1}
"""


@pytest.mark.slow
def test_drops_along_a_two_step_chain_are_measured_against_the_trained_model(cli, tmp_path):
    (tmp_path / "chain.yaml").write_text(CHAIN)
    result = cli("run", str(tmp_path / "chain.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    truth = load_dataset(DigitsData(source="digits")).y_test
    accuracy = {name: float(np.mean(predictions(tmp_path / "run" / "validation" / name) == truth)) for name in ("train", "prune", "cluster")}
    cluster = json.loads((tmp_path / "run" / "validation" / "cluster" / "blessing.json").read_text())
    assert cluster["baseline"]["name"] == "train" and cluster["parent"] == "prune"
    assert cluster["metrics"]["drop"] == pytest.approx(accuracy["train"] - accuracy["cluster"], abs=1e-9)
    (check,) = cluster["gates"]
    assert check["gate"] == "max_drop" and check["value"] == pytest.approx(accuracy["train"] - accuracy["cluster"], abs=1e-9)
    parent_drop = accuracy["prune"] - accuracy["cluster"]
    assert accuracy["train"] - accuracy["cluster"] != pytest.approx(parent_drop), "the chain must tell the two apart"
    shutil.rmtree(tmp_path / "run")
