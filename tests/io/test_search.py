"""The search's bookkeeping on validations: which artifact it selects, which it calls closest and why."""

from __future__ import annotations

import pytest

from modelpress.io.search import evaluate
from tests.search_validations import spec, write_validation


def test_the_cheapest_rung_meeting_the_target_wins_over_a_better_later_one(tmp_path):
    validations = [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=5_000, accuracy=0.95),
        write_validation(tmp_path, "qat-tflite_int8", size_gzip_bytes=4_000, accuracy=0.96),  # smaller and better, dearer
    ]
    outcome = evaluate(spec({"max_size_ratio": 0.5}), validations, ["train", "ptq", "qat"])
    assert outcome.selected["artifact"] == "ptq-tflite_int8" and outcome.closest is None
    assert [(r["artifact"], round(r["size_ratio"], 3), r["met"]) for r in outcome.rows] == [
        ("train", 1.0, False), ("ptq-tflite_int8", 0.25, True), ("qat-tflite_int8", 0.2, True),
    ]  # fmt: skip
    assert outcome.verdict == (
        "ptq-tflite_int8 (rung ptq: quantize(mode=int8)) meets the target: gzip 5,000 bytes (0.250 of the trained "
        "SavedModel's), batch-1 p50 1 ms (1.00x), accuracy 0.9500"
    )


def test_within_a_rung_the_most_accurate_then_smallest_artifact_meeting_the_target_is_selected(tmp_path):
    validations = [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", latency_ms_p50=0.4, accuracy=0.95, size_gzip_bytes=3_000),
        write_validation(tmp_path, "ptq-onnx", "onnx", latency_ms_p50=0.3, accuracy=0.96, size_gzip_bytes=9_000),
        write_validation(tmp_path, "ptq-openvino_int8", "openvino_int8", latency_ms_p50=0.2, accuracy=0.96, size_gzip_bytes=8_000),
        write_validation(tmp_path, "ptq-tflite_fp16", "tflite_fp16", latency_ms_p50=0.9, accuracy=0.97),  # too slow
    ]
    outcome = evaluate(spec({"min_speedup": 2}), validations, ["train", "ptq"])
    assert outcome.selected["artifact"] == "ptq-openvino_int8"
    assert outcome.selected["speedup"] == pytest.approx(5.0)


def test_an_unblessed_artifact_never_meets_the_target(tmp_path):
    validations = [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", blessed=False, size_gzip_bytes=5_000),
        write_validation(tmp_path, "qat-tflite_int8", size_gzip_bytes=8_000),
    ]
    outcome = evaluate(spec({"max_size_ratio": 0.5}), validations, ["train", "ptq", "qat"])
    assert outcome.selected["artifact"] == "qat-tflite_int8"


def test_only_the_targets_format_counts(tmp_path):
    validations = [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=2_000),
        write_validation(tmp_path, "ptq-openvino_int8", "openvino_int8", size_gzip_bytes=9_000),
    ]
    outcome = evaluate(spec({"max_size_ratio": 0.2, "format": "openvino_int8"}), validations, ["train", "ptq"])
    assert outcome.selected is None and outcome.closest["artifact"] == "ptq-openvino_int8"
    assert [r["counted"] for r in outcome.rows] == [False, False, True]


def test_when_nothing_meets_the_target_the_closest_blessed_artifact_is_named_with_its_shortfall(tmp_path):
    validations = [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=3_000, latency_ms_p50=0.5),
        write_validation(tmp_path, "qat-tflite_int8", size_gzip_bytes=2_500, latency_ms_p50=0.9),
        write_validation(tmp_path, "qat-tflite_fp16", "tflite_fp16", blessed=False, size_gzip_bytes=2_100, latency_ms_p50=0.1),
    ]
    # Size is missed by 50% (ptq) and 25% (qat); qat's latency is missed by 80%: its worst shortfall is the larger.
    outcome = evaluate(spec({"max_size_ratio": 0.1, "max_latency_ms": 0.5}), validations, ["train", "ptq", "qat"])
    assert outcome.selected is None and outcome.closest["artifact"] == "ptq-tflite_int8"
    assert outcome.verdict == (
        "no recipe met the target; closest: ptq-tflite_int8 (rung ptq: quantize(mode=int8)): gzip size 0.150 of the "
        "trained SavedModel's, above max_size_ratio 0.1 (50% over)"
    )
    # A blessed artifact is closer than any unblessed one; when only unblessed ones count, the closest says which gate
    # it failed as well as what it missed.
    assert evaluate(spec({"max_size_ratio": 0.1}), [validations[0], validations[3]], ["train", "ptq", "qat"]).closest["artifact"] == "train"
    outcome = evaluate(spec({"max_size_ratio": 0.1, "format": "tflite_fp16"}), validations, ["train", "ptq", "qat"])
    assert outcome.verdict == (
        "no recipe met the target; closest: qat-tflite_fp16 (rung qat: quantize(mode=int8)): not blessed: accuracy drop "
        "2.00 pp vs train exceeds max_drop 1.00 pp; gzip size 0.105 of the trained SavedModel's, above max_size_ratio 0.1 (5% over)"
    )


def test_rungs_without_artifacts_say_whether_they_were_skipped_or_failed(tmp_path):
    validations = [write_validation(tmp_path, "train", "saved_model"), write_validation(tmp_path, "qat-tflite_int8", size_gzip_bytes=1_000)]
    outcome = evaluate(spec({"max_gzip_bytes": 2_000}, ("ptq", "qat", "pruned")), validations, ["train", "ptq", "qat", "pruned"])
    notes = {r["rung"]: (r["note"], r["skipped"]) for r in outcome.rows}
    assert notes["ptq"] == ("made no artifact: its tasks failed or skipped (see the run's log)", False)
    assert notes["pruned"] == ("skipped: rung qat already met the target", True)


def test_without_the_trained_models_validation_there_is_nothing_to_measure_against(tmp_path):
    assert evaluate(spec({"max_size_ratio": 0.5}), [write_validation(tmp_path, "ptq-tflite_int8")], ["train", "ptq"]) is None
