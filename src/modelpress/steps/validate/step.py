"""validate: evaluate an artifact in its own runtime on the test split, apply the gates, write the blessing.

Output folder: `blessing.json` (blessed, metrics, baseline, thresholds, every failed gate), `evaluation.json`
(per-class accuracy, confusion matrix, latency samples and how they were taken), `predictions.npy` (the test
predictions, so children can report agreement with this artifact without running it again) and `golden.npz` (a few
test rows and this artifact's outputs for them: deploy's smoke test compares TF Serving's answers with these).
A rejected artifact's folder also holds `sensitivity.json` (sensitivity.py: which layers of its parent, each
compressed alone the same way, cost the most accuracy, or why that cannot be measured) and, for tflite_litert, the
quantizer's per-layer error report.

Timing is the same for every runtime, so their latencies compare: evaluation.threads CPU threads, untimed warm-up
runs first, then evaluation.latency_runs timed batch-1 calls (p50/p95) and timed full batches (throughput). TensorFlow
cannot resize its thread pools once it has run in a process (a local `modelpress run` trains first), so a SavedModel
is then measured in a worker process started for that thread count (kept for the next SavedModel of the run).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.progress import log
from modelpress.contract.compression import EvaluationSpec, Gates
from modelpress.io import releases, storage
from modelpress.io.artifacts import (
    BLESSING_FILE,
    LAYER_ERRORS_FILE,
    SENSITIVITY_FILE,
    ArtifactMeta,
    Blessing,
    content_digest,
    open_artifact,
    read_blessing,
)
from modelpress.io.data import load_dataset
from modelpress.io.modelfiles import check_model_files
from modelpress.ml.runtimes import load_runner
from modelpress.steps.validate.config import ValidateConfig
from modelpress.steps.validate.sensitivity import layer_sensitivity

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.npy"
GOLDEN_FILE = "golden.npz"
GOLDEN_ROWS = 8
# Throughput: full batches timed until both are reached (one batch of a small model takes well under a millisecond).
THROUGHPUT_MIN_RUNS = 3
THROUGHPUT_MIN_SECONDS = 0.2


def predict_test_split(runner, data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true classes of every test example, batch by batch (the data may be streamed: nothing but the
    classes is kept)."""
    predicted, labels = [], []
    with data.errors():
        for x, y in data.batches("test", batch_size).as_numpy_iterator():
            predicted.append(np.argmax(runner.predict(x), axis=1))
            labels.append(y)
    return np.concatenate(predicted), np.concatenate(labels)


def batched_throughput(runner, x: np.ndarray, batch_size: int) -> float:
    """Examples per second on full batches of real test rows (cycled when there are fewer), after one untimed batch."""
    batch = x[np.arange(batch_size) % len(x)]
    runner.predict(batch)
    runs, started = 0, time.perf_counter()
    while runs < THROUGHPUT_MIN_RUNS or time.perf_counter() - started < THROUGHPUT_MIN_SECONDS:
        runner.predict(batch)
        runs += 1
    return runs * batch_size / (time.perf_counter() - started)


def batch1_latency(runner, x: np.ndarray, runs: int, warmup: int) -> list[float]:
    """Milliseconds per single-example call, after warm-up, cycling through real test rows."""
    for i in range(warmup):
        runner.predict(x[i % len(x)][None])
    samples = []
    for i in range(runs):
        row = x[i % len(x)][None]
        started = time.perf_counter()
        runner.predict(row)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


@dataclass
class Measurement:
    """What validate measures of an artifact in its runtime."""

    runtime: str
    threads: int | None  # CPU threads it computed with; None: the runtime's default or a GPU
    predicted: np.ndarray  # class per test row
    labels: np.ndarray  # true class per test row, in the same order
    latencies: list[float]  # batch-1 milliseconds
    throughput: float  # examples per second on full batches
    golden_outputs: np.ndarray  # outputs for the first GOLDEN_ROWS test rows


def measure(runner, data, evaluation: EvaluationSpec) -> Measurement:
    """Accuracy over the whole test split; latency and throughput on its first rows (a full batch of them)."""
    predicted, labels = predict_test_split(runner, data, evaluation.batch_size)
    x, _ = data.head("test", max(evaluation.batch_size, GOLDEN_ROWS))
    return Measurement(
        runtime=runner.runtime,
        threads=runner.threads,
        predicted=predicted,
        labels=labels,
        latencies=batch1_latency(runner, x, evaluation.latency_runs, evaluation.warmup_runs),
        throughput=batched_throughput(runner, x, evaluation.batch_size),
        golden_outputs=runner.predict(x[:GOLDEN_ROWS]),
    )


# thread count -> a worker process whose TensorFlow runs with that many threads (started once: importing TF takes seconds)
_TF_WORKERS: dict[int, ProcessPoolExecutor] = {}


def measure_in_tf_worker(folder: Path, meta: ArtifactMeta, data, evaluation: EvaluationSpec) -> Measurement:
    """measure() in a process where TensorFlow started with evaluation.threads."""
    if evaluation.threads not in _TF_WORKERS:
        _TF_WORKERS[evaluation.threads] = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return _TF_WORKERS[evaluation.threads].submit(_measure_artifact, folder, meta, data, evaluation).result()
    except BrokenProcessPool as exc:  # killed (e.g. out of memory): the next SavedModel gets a new worker
        del _TF_WORKERS[evaluation.threads]
        raise StepFailed(f"the process measuring {meta.format} in TensorFlow died ({exc}); see its log above") from exc


def _measure_artifact(folder: Path, meta: ArtifactMeta, data, evaluation: EvaluationSpec) -> Measurement:
    return measure(load_runner(folder, meta, evaluation.threads), data, evaluation)


def measure_artifact(folder: Path, meta: ArtifactMeta, data, evaluation: EvaluationSpec) -> Measurement:
    runner = load_runner(folder, meta, evaluation.threads)
    if runner.runtime == "tensorflow" and runner.threads != evaluation.threads:
        log(f"TensorFlow already runs with other thread pools in this process; measuring {meta.format} in a worker process "
            f"with {evaluation.threads} thread(s)")
        del runner
        return measure_in_tf_worker(folder, meta, data, evaluation)
    return measure(runner, data, evaluation)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> list[float | None]:
    totals = matrix.sum(axis=1)
    return [float(matrix[i, i] / totals[i]) if totals[i] else None for i in range(len(matrix))]


def apply_gates(gates: Gates, metrics: dict, baseline: dict | None, serving: dict | None = None) -> list[dict]:
    """One entry per configured gate: name, threshold, measured value, passed, and a reason when it failed."""
    checks = []

    def check(name: str, value, threshold, passed: bool, reason: str) -> None:
        checks.append({"gate": name, "threshold": threshold, "value": value, "passed": passed, "reason": None if passed else reason})

    accuracy = metrics["accuracy"]
    if gates.min_accuracy is not None:
        check("min_accuracy", accuracy, gates.min_accuracy, accuracy >= gates.min_accuracy,
              f"accuracy {accuracy:.4f} is below min_accuracy {gates.min_accuracy:.4f}")
    if gates.max_drop is not None and baseline is not None:
        drop = baseline["accuracy"] - accuracy
        check("max_drop", drop, gates.max_drop, drop <= gates.max_drop + 1e-12,
              f"accuracy drop {drop * 100:.2f} pp vs {baseline['name']} exceeds max_drop {gates.max_drop * 100:.2f} pp")
    if gates.max_class_drop is not None and baseline is not None:
        drops = [
            (b - a, i) for i, (a, b) in enumerate(zip(metrics["per_class_accuracy"], baseline["per_class_accuracy"], strict=False))
            if a is not None and b is not None
        ]
        worst, cls = max(drops) if drops else (0.0, None)
        check("max_class_drop", worst, gates.max_class_drop, worst <= gates.max_class_drop + 1e-12,
              f"class {cls} accuracy dropped {worst * 100:.2f} pp, above max_class_drop {gates.max_class_drop * 100:.2f} pp")
    if gates.min_agreement is not None and metrics.get("agreement") is not None:
        agreement = metrics["agreement"]
        check("min_agreement", agreement, gates.min_agreement, agreement >= gates.min_agreement,
              f"agrees with its parent on {agreement:.4f} of test predictions, below min_agreement {gates.min_agreement}")
    if gates.max_size_bytes is not None:
        size = metrics["size_bytes"]
        check("max_size_bytes", size, gates.max_size_bytes, size <= gates.max_size_bytes,
              f"size {size:,} bytes exceeds max_size_bytes {gates.max_size_bytes:,}")
    if gates.max_latency_ms is not None:
        p95 = metrics["latency_ms_p95"]
        check("max_latency_ms", p95, gates.max_latency_ms, p95 <= gates.max_latency_ms,
              f"batch-1 p95 latency {p95:.3f} ms exceeds max_latency_ms {gates.max_latency_ms}")
    if gates.max_drop_vs_serving is not None and serving is not None:
        drop = serving["accuracy"] - accuracy
        check("max_drop_vs_serving", drop, gates.max_drop_vs_serving, drop <= gates.max_drop_vs_serving + 1e-12,
              f"accuracy drop {drop * 100:.2f} pp vs published {serving['name']} version {serving['version']} "
              f"({serving['source']}) exceeds max_drop_vs_serving {gates.max_drop_vs_serving * 100:.2f} pp")
    return checks


def published_reference(config: ValidateConfig, output: str, data) -> dict | None:
    """The published model this artifact would replace: its accuracy on this test split when its artifact can be
    run here, else the accuracy its release recorded. None when nothing is published yet."""
    if config.push is None or config.push.model_name is None:
        raise UserError("gates.max_drop_vs_serving needs the registry: set push.uri and push.model_name in the config")
    root = config.push.uri or releases.default_registry_uri(output)
    label = config.push.labels[0] if config.push.labels else "current"
    published = releases.published_artifact(root, config.push.model_name, label, config.name)
    if published is None:
        log(f"max_drop_vs_serving: nothing published as {config.push.model_name}:{label} yet; the gate does not apply")
        return None
    reference = {"version": published["version"], "name": published["name"], "predictions": None}
    try:
        with open_artifact(published["uri"]) as (folder, meta):
            check_model_files(folder, meta)
            predicted, labels = predict_test_split(load_runner(folder, meta), data, config.evaluation.batch_size)
        return {**reference, "accuracy": float(np.mean(predicted == labels)), "source": "measured", "predictions": predicted}
    except UserError as exc:
        log(f"published {published['name']} v{published['version']} cannot be run here ({exc}); using its recorded accuracy")
        return {**reference, "accuracy": published["metrics"]["accuracy"], "source": "recorded"}


def _read_reference(uri: str | None) -> tuple[dict | None, np.ndarray | None]:
    """A parent's or baseline's validation output: its metrics and its test predictions."""
    if not uri:
        return None, None
    blessing, _ = read_blessing(uri)
    predictions = np.load(io.BytesIO(storage.read_bytes(storage.join(uri, PREDICTIONS_FILE))), allow_pickle=False)
    return {"name": blessing.name, **blessing.metrics}, predictions


def rejection_sensitivity(
    config: ValidateConfig, inputs: dict[str, str], meta: ArtifactMeta, data, drop_vs_parent: float | None
) -> dict:
    """Which layers of the parent, each compressed alone like this artifact, cost the most accuracy (the file says
    why when that cannot be measured), beside what the artifact itself lost against its parent on the test split;
    logged in one line."""
    found = layer_sensitivity(meta, inputs.get("parent"), data, config.evaluation, config.model)
    if not found["computed"]:
        log(f"{config.name}: no per-layer sensitivity: {found['reason']}")
        return found
    found["artifact_test_drop"] = drop_vs_parent
    if found["layers"]:
        worst = found["layers"][0]
        log(f"{config.name}: per-layer sensitivity on {found['rows']} {found['split']} rows ({found['technique']}): "
            f"worst {worst['layer']}, {worst['drop'] * 100:+.2f} pp alone")
    return found


def run(config: ValidateConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    parent, parent_predictions = _read_reference(inputs.get("parent"))
    baseline, _ = _read_reference(inputs.get("baseline") or inputs.get("parent"))
    with open_artifact(inputs["model"]) as (folder, meta):
        digest = content_digest(folder, meta)
        check_model_files(folder, meta)
        log(f"validate {config.name} ({meta.format}) on {data.count('test')} test examples, {config.evaluation.threads} thread(s)")
        measured = measure_artifact(folder, meta, data, config.evaluation)
        # A quantizer's per-layer error report (tflite_litert) goes with a rejection: what the reports show.
        layer_errors = (folder / meta.details["layer_errors"]).read_bytes() if meta.details.get("layer_errors") else None
    predicted, labels, latencies = measured.predicted, measured.labels, measured.latencies
    serving = published_reference(config, output, data) if config.gates.max_drop_vs_serving is not None else None
    matrix = confusion(labels, predicted, data.num_classes)
    metrics = {
        "accuracy": float(np.mean(predicted == labels)),
        "per_class_accuracy": per_class_accuracy(matrix),
        "agreement": float(np.mean(predicted == parent_predictions)) if parent_predictions is not None else None,
        "size_bytes": meta.metrics["size_bytes"],
        "size_gzip_bytes": meta.metrics["size_gzip_bytes"],
        "params": meta.metrics.get("params"),
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p95": float(np.percentile(latencies, 95)),
        "throughput_per_s": float(measured.throughput),
        "threads": measured.threads,
        "test_examples": int(len(labels)),
    }
    if baseline is not None:
        metrics["drop"] = baseline["accuracy"] - metrics["accuracy"]
    if serving is not None:
        metrics["serving_accuracy"] = serving["accuracy"]
        if serving["predictions"] is not None:
            metrics["agreement_with_serving"] = float(np.mean(predicted == serving["predictions"]))
    checks = apply_gates(config.gates, metrics, baseline, serving)
    reasons = [c["reason"] for c in checks if not c["passed"]]
    sensitivity = None
    if reasons and config.evaluation.sensitivity_rows:
        drop_vs_parent = parent["accuracy"] - metrics["accuracy"] if parent else None
        sensitivity = rejection_sensitivity(config, inputs, meta, data, drop_vs_parent)
    blessing = Blessing(
        name=config.name,
        artifact=storage.absolute_uri(inputs["model"]),
        artifact_digest=digest,
        format=meta.format,
        runtime=measured.runtime,
        blessed=not reasons,
        reasons=reasons,
        metrics=metrics,
        baseline={"name": baseline["name"], "accuracy": baseline["accuracy"]} if baseline else None,
        parent=parent["name"] if parent else None,
        serving={k: v for k, v in serving.items() if k != "predictions"} if serving else None,
        thresholds=config.gates.model_dump(exclude_none=True),
        gates=checks,
        data_hash=data.hash,
        artifact_data_hash=meta.data_hash,
    )
    evaluation = {
        "confusion_matrix": matrix.tolist(),
        "class_names": data.class_names,
        "runtime": measured.runtime,
        "threads": measured.threads,
        "warmup_runs": config.evaluation.warmup_runs,
        "latency_runs": config.evaluation.latency_runs,
        "throughput_batch_size": config.evaluation.batch_size,
        "latency_ms_samples": [round(v, 4) for v in latencies],
    }
    with storage.staged_output(output, overwrite=overwrite, marker=BLESSING_FILE) as folder:
        (folder / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2))
        np.save(folder / PREDICTIONS_FILE, predicted)
        np.savez(folder / GOLDEN_FILE, inputs=data.head("test", GOLDEN_ROWS)[0], outputs=measured.golden_outputs)
        if reasons and layer_errors is not None:
            (folder / LAYER_ERRORS_FILE).write_bytes(layer_errors)
        if sensitivity is not None:
            (folder / SENSITIVITY_FILE).write_text(json.dumps(sensitivity, indent=2))
        (folder / BLESSING_FILE).write_text(blessing.model_dump_json(indent=2))
    verdict = "BLESSED" if not reasons else "NOT blessed: " + "; ".join(reasons)
    log(f"{config.name}: accuracy {metrics['accuracy']:.4f}, p50 {metrics['latency_ms_p50']:.3f} ms -> {verdict}")
    return {"uri": output, "blessed": not reasons, "reasons": reasons, "metrics": metrics}
