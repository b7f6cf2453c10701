"""The benchmark harness on a tiny workflow: real train, convert and `modelpress step validate` processes, then both
benches' rows, tables and result files, so `make bench` and `make bench-techniques` cannot silently rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import reference, techniques
from bench.harness import Bench, text_table

TINY = {
    "name": "bench-tiny",
    "model": {"zoo": "mlp", "params": {"hidden": [16]}},
    "data": {"source": "digits"},
    "train": {"epochs": 1, "seed": 0},
    "targets": ["tflite_fp32"],
    "gates": {"max_drop": 0.01},
    "evaluation": {"latency_runs": 10, "warmup_runs": 1, "threads": 1},
}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The tiny spec run twice through one Bench: once as the peers, once as a recipe (its tasks are not re-run)."""
    bench = Bench(tmp_path_factory.mktemp("bench") / "work", repeats=2)
    peers = bench.run_spec(TINY, "tiny", "peer", {"train": reference.TF_PEER, "tflite_fp32": "tflite_fp32"})
    ours = bench.run_spec(TINY, "tiny", "modelpress", {"tflite_fp32": "tiny recipe"})
    return bench, peers, ours


def test_every_artifact_is_validated_in_fresh_processes_with_repeats(measured):
    bench, peers, ours = measured
    assert [m.name for m in peers] == [reference.TF_PEER, "tflite_fp32"]
    assert [(m.format, m.runtime) for m in peers] == [("saved_model", "tensorflow"), ("tflite_fp32", "litert")]
    for m in peers:
        assert m.repeats == 2 and m.threads == 1
        assert m.latency_ms_p50_min <= m.latency_ms_p50 <= m.latency_ms_p50_max
        assert m.latency_ms_p50 <= m.latency_ms_p95
        assert m.size_gzip_bytes < m.size_bytes and m.throughput_per_s > 0
        blessing = json.loads((Path(m.validation_uri) / "blessing.json").read_text())
        assert blessing["metrics"]["accuracy"] == m.accuracy
    train, tflite = peers
    assert train.drop_pp == 0.0 and train.baseline_accuracy == train.accuracy
    assert tflite.drop_pp == pytest.approx((train.accuracy - tflite.accuracy) * 100)
    # The recipe run reused the peers' trained model, conversion and measurement: same artifact, same numbers.
    assert ours[0].uri == tflite.uri and ours[0].latency_ms_p50 == tflite.latency_ms_p50
    assert set(bench.seconds) == {"train", "convert", "validate"}


def test_techniques_rows_table_and_json(measured, tmp_path):
    _, peers, _ = measured
    rows = [techniques.technique_row(m, peers[0].accuracy) for m in peers]
    payload = techniques.write_results(rows, ["distilled student on cnn: not run"], tmp_path, {"seconds": 1.0})
    written = json.loads((tmp_path / "techniques.json").read_text())
    assert written == json.loads(json.dumps(payload))
    for row in written["rows"]:
        assert set(techniques.ROW_FIELDS) <= set(row)
        assert {"technique", "model", "accuracy", "drop_pp", "params", "size_gzip_bytes", "latency_ms_p50"} <= set(row)
    assert [t["met"] for t in written["targets"]] == [None] * 5  # no CNN rows: every target reads "not measured"
    lines = techniques.table(rows).splitlines()
    assert lines[0].split()[:3] == ["technique", "model", "format"]
    assert lines[2].startswith(reference.TF_PEER) and f"{peers[0].accuracy:.4f}" in lines[2]
    assert "not measured" in techniques.targets_text(written["targets"])


def test_reference_rows_ratios_goals_and_files(measured, tmp_path):
    _, peers, ours = measured
    rows = [m.row(reference.ROW_FIELDS) for m in [*peers, *ours]]
    text = reference.report(rows, [], tmp_path, {"seconds": 1.0}, {"tiny": TINY["data"]}, profile_limits=False)
    written = json.loads((tmp_path / "reference.json").read_text())
    tf, tflite, recipe = written["rows"]
    for row in written["rows"]:
        for field in ("workload", "name", "kind", "blessed", "accuracy", "drop_pp", "size_gzip_bytes", "latency_ms_p50", "latency_ms_p95"):
            assert field in row
    assert (tf["kind"], recipe["kind"]) == ("peer", "modelpress")
    assert recipe["speedup_vs_tf"] == pytest.approx(tf["latency_ms_p50"] / recipe["latency_ms_p50"])
    assert recipe["size_ratio_tf"] == pytest.approx(recipe["size_gzip_bytes"] / tf["size_gzip_bytes"])
    blessed_peers = [r for r in (tf, tflite) if r["blessed"]]
    best = min(blessed_peers, key=lambda r: r["latency_ms_p50"]) if blessed_peers else None
    assert recipe["speedup_vs_best_peer"] == (pytest.approx(best["latency_ms_p50"] / recipe["latency_ms_p50"]) if best else None)
    size_goal, tf_goal, _ = written["goals"]
    if recipe["blessed"]:
        assert size_goal["met"] == (recipe["size_ratio_tf"] <= 0.1) and tf_goal["met"] == (recipe["speedup_vs_tf"] >= 8)
    else:
        assert size_goal["met"] is False and size_goal["reached"] == "no blessed ModelPress artifact"
    assert text.startswith("== tiny ==") and "== goals ==" in text and "tiny recipe" in text
    assert (tmp_path / "reference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (tmp_path / "reference.html").read_text()


def test_pareto_front_keeps_only_undominated_rows():
    rows = [{"name": n, "accuracy": a, "latency_ms_p50": t} for n, a, t in
            [("fast", 0.90, 1.0), ("dominated", 0.89, 2.0), ("accurate", 0.95, 3.0), ("slow", 0.95, 4.0)]]
    assert [r["name"] for r in reference.pareto_front(rows, "latency_ms_p50")] == ["fast", "accurate"]


def test_text_table_aligns_numbers_right_and_text_left():
    table = text_table([{"a": "x", "n": 1234.5}, {"a": "longer", "n": 2.0}], [("name", "a", None), ("value", "n", "rate")])
    assert table.splitlines() == ["name    value", "------  -----", "x       1,234", "longer      2"]
