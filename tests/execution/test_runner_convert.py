"""`modelpress run` with conversion targets: a tiny digits CNN converted to TFLite INT8, OpenVINO FP32 and ONNX, each
artifact validated in its own runtime, gated, and reported; a run whose conversion cannot work blesses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

# The digits_cnn example cut down: an 8-filter CNN (4,538 parameters), 2 epochs, three of its targets, few latency runs.
TINY_CNN = {
    "name": "tiny-cnn",
    "model": {"zoo": "small_cnn", "params": {"filters": [8], "dense": 32}},
    "data": {"source": "digits"},
    "train": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01},
    "targets": ["saved_model", {"format": "tflite_int8", "options": {"calibration_samples": 128}}, "openvino_fp32", "onnx"],
    "evaluation": {"latency_runs": 5, "warmup_runs": 2},
}
FLOAT_TARGETS = ("openvino_fp32", "onnx")
RUNTIMES = {"train": "tensorflow", "tflite_int8": "litert", "openvino_fp32": "openvino", "onnx": "onnxruntime"}


def write_workflow(folder: Path, **changes) -> Path:
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump({**TINY_CNN, **changes}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def size_gated_run(tmp_path_factory) -> tuple[Path, object]:
    """The tiny workflow, gated on accuracy and on a size only the INT8 TFLite model fits in."""
    from tests.conftest import run_cli

    folder = tmp_path_factory.mktemp("convert_run")
    gates = {"min_accuracy": 0.8, "max_size_bytes": 12_000}
    result = run_cli("run", str(write_workflow(folder, gates=gates)), "--out", str(folder / "run"))
    assert result.returncode == 0, result.stderr
    return folder / "run", result


def test_every_target_is_converted_validated_in_its_runtime_and_reported(size_gated_run):
    run, result = size_gated_run
    summary = json.loads((run / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["artifacts"]}
    assert {name: row["format"] for name, row in rows.items()} == {
        "train": "saved_model", "tflite_int8": "tflite_int8", "openvino_fp32": "openvino_fp32", "onnx": "onnx",
    }  # fmt: skip
    assert rows["train"]["metrics"]["accuracy"] >= 0.85, "the tiny CNN must learn enough for agreement to mean something"
    assert rows["train"]["metrics"]["agreement"] is None  # the trained model has no parent
    for name in FLOAT_TARGETS:
        assert rows[name]["metrics"]["agreement"] >= 0.99, name
        assert abs(rows[name]["metrics"]["accuracy"] - rows["train"]["metrics"]["accuracy"]) <= 0.01, name
    assert rows["tflite_int8"]["metrics"]["agreement"] >= 0.9
    for name, row in rows.items():
        blessing = json.loads((run / "validation" / name / "blessing.json").read_text())
        assert blessing["runtime"] == RUNTIMES[name] and blessing["metrics"]["threads"] == 1
        assert row["uri"] == str(run / "artifacts" / name)
        assert row["metrics"]["latency_ms_p50"] > 0 and row["metrics"]["throughput_per_s"] > 0
    # Printed and written: one row per artifact in the terminal table and in report.md, and the plots.
    table = result.stdout.splitlines()
    report = (run / "report.md").read_text()
    for name, row in rows.items():
        assert any(line.startswith(f"{name} ") and f" {row['format']} " in line for line in table), name
        assert f"| {name} | {row['format']} |" in report
    assert (run / "report.png").stat().st_size > 10_000


def test_gates_apply_per_artifact_and_each_blessing_lists_its_failed_gates(size_gated_run):
    run, _ = size_gated_run
    summary = json.loads((run / "summary.json").read_text())
    for row in summary["artifacts"]:
        size = row["metrics"]["size_bytes"]
        assert row["blessed"] == (size <= 12_000 and row["metrics"]["accuracy"] >= 0.8), row["name"]
        blessing = json.loads((run / "validation" / row["name"] / "blessing.json").read_text())
        failed = [gate["gate"] for gate in blessing["gates"] if not gate["passed"]]
        assert blessing["reasons"] == row["reasons"] and len(failed) == len(row["reasons"])
        if size > 12_000:
            assert "max_size_bytes" in failed and any(f"size {size:,} bytes exceeds" in r for r in row["reasons"])
    assert summary["blessed"] == ["tflite_int8"]  # only INT8 fits in 12 kB


def test_a_conversion_that_cannot_work_fails_its_own_chain_and_the_run_still_reports(cli, tmp_path):
    # SGD at a learning rate of 1e9 drives the weights to infinity: the model predicts NaN, nothing can be converted.
    workflow = write_workflow(tmp_path, train={"epochs": 1, "optimizer": "sgd", "learning_rate": 1e9}, targets=["onnx"])
    run = tmp_path / "run"
    result = cli("run", str(workflow), "--out", str(run))
    assert result.returncode == 1  # the run finished, but a task failed
    why = f"the model at {run / 'artifacts' / 'train'} predicts NaN or infinity on test rows"
    assert f"FAILED convert_onnx: {why}" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    (failure,) = summary["failed"]
    assert failure["task"] == "convert_onnx" and failure["reason"].startswith(why)
    assert {s["task"]: s["reason"] for s in summary["skipped"]}["validate_convert_onnx"] == "its input 'model' was skipped"
    assert "onnx" not in summary["blessed"] and not (run / "artifacts" / "onnx" / "artifact.json").exists()
    assert "## Failed" in (run / "report.md").read_text() and "convert_onnx" in (run / "report.html").read_text()


def test_a_thread_count_below_one_is_refused_naming_its_line(cli, tmp_path):
    workflow = write_workflow(tmp_path, evaluation={"threads": 0})
    result = cli("run", str(workflow), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip().splitlines()[-1] == (
        f"modelpress: error: {workflow} line 22: evaluation.threads: Input should be greater than or equal to 1 (got 0)"
    )
