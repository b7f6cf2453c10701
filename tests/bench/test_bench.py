"""The benchmark harness on a tiny workflow: real train, convert and `modelpress step validate` processes, then both
benches' rows, tables and result files, so `make bench` and `make bench-techniques` cannot silently rot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import reference, techniques
from bench.harness import Bench, latency_summary, paired_drop_interval, round_robin, text_table, wilson_interval

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
    """The tiny spec run twice through one Bench, timed with 1 and 2 threads (one repeat: repeats are round_robin's
    and latency_summary's tests): once as the peers, once as a recipe (its tasks are not re-run)."""
    bench = Bench(tmp_path_factory.mktemp("bench") / "work", repeats=1, threads=(1, 2))
    peers = bench.run_spec(TINY, "tiny", "peer", {"train": reference.TF_PEER, "tflite_fp32": "tflite_fp32"})
    ours = bench.run_spec(TINY, "tiny", "modelpress", {"tflite_fp32": "tiny recipe"})
    return bench, peers, ours


def test_every_artifact_is_validated_in_fresh_processes_with_repeats(measured):
    bench, peers, ours = measured
    assert [m.name for m in peers] == [reference.TF_PEER, "tflite_fp32"]
    assert [(m.format, m.runtime) for m in peers] == [("saved_model", "tensorflow"), ("tflite_fp32", "litert")]
    for m in peers:
        assert m.repeats == 1 and m.threads == 1 and m.all_threads == 2
        assert m.latency_ms_p50_min == m.latency_ms_p50 == m.latency_ms_p50_max <= m.latency_ms_p95
        assert m.latency_ms_p50_all_threads > 0 and m.throughput_per_s_all_threads > 0
        assert m.size_gzip_bytes < m.size_bytes and m.throughput_per_s > 0
        blessing = json.loads((Path(m.validation_uri) / "blessing.json").read_text())
        assert blessing["metrics"]["accuracy"] == m.accuracy and blessing["metrics"]["threads"] == 1
        assert m.test_examples == blessing["metrics"]["test_examples"] > 300 and m.seed == 0
    train, tflite = peers
    # The budget: the trained model's epochs, and the seconds of every step that made the artifact.
    assert train.epochs == tflite.epochs == {"train": 1}
    assert 0 < train.train_seconds < tflite.train_seconds
    validations = sorted(p.name for p in Path(train.validation_uri).parent.iterdir() if p.is_dir())
    assert validations == sorted(Path(m.validation_uri).name for m in peers)
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


def test_reference_rows_comparisons_goals_and_files(measured, tmp_path):
    _, peers, ours = measured
    rows = [m.row(reference.ROW_FIELDS) for m in [*peers, *ours]]
    text = reference.report(rows, [], tmp_path, {"seconds": 1.0}, {"tiny": TINY["data"]}, profile_limits=False)
    written = json.loads((tmp_path / "reference.json").read_text())
    tf, tflite, recipe = written["rows"]
    assert (tf["kind"], recipe["kind"]) == ("peer", "modelpress")
    assert recipe["speedup_vs_tf"] == pytest.approx(tf["latency_ms_p50"] / recipe["latency_ms_p50"])
    assert recipe["size_ratio_tf"] == pytest.approx(recipe["size_gzip_bytes"] / tf["size_gzip_bytes"])
    assert tflite["drop_pp"] == pytest.approx((tf["accuracy"] - tflite["accuracy"]) * 100)
    assert tflite["blessed"] == (tflite["drop_pp"] <= 1.0)
    low, high = tflite["accuracy_ci"]
    assert low < tflite["accuracy"] < high and high - low < 0.1
    assert tf["drop_ci_pp"] == [0.0, 0.0]  # the reference against itself
    best = min((r for r in (tf, tflite) if r["blessed"]), key=lambda r: r["latency_ms_p50"])
    assert recipe["speedup_vs_best_peer"] == pytest.approx(best["latency_ms_p50"] / recipe["latency_ms_p50"])
    assert written["goals"] == []  # every goal reads a workload of bench.recipes
    assert text.startswith("== tiny: real data (digits), 359 test examples (1 pp = 4) ==")
    assert "== goals ==" in text and "tiny recipe" in text
    assert "retired: " not in text and "what limits" not in text  # the digits CNN did not run; no goal was missed
    assert (tmp_path / "reference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (tmp_path / "reference.html").read_text()


def row(name: str, kind: str, drop_pp: float, p50: float, gzip_ratio: float) -> dict:
    return {"workload": "w", "name": name, "kind": kind, "drop_pp": drop_pp, "blessed": drop_pp <= 1.0,
            "latency_ms_p50": p50, "size_ratio_tf": gzip_ratio}


def speedups(rows: list[dict]) -> list[dict]:
    peer = reference.best_peer(rows)
    return [{**r, "speedup_vs_best_peer": peer["latency_ms_p50"] / r["latency_ms_p50"]} for r in rows]


def test_speed_goal_is_met_by_a_blessed_artifact_and_otherwise_names_the_closest():
    peers = [row("tflite_int8_ptq", "peer", 0.2, 1.0, 0.25), row("scratch_student -> tflite_int8_ptq", "peer", 3.0, 0.2, 0.05)]
    fast_but_lossy = row("distilled -> tflite_int8", "modelpress", 2.5, 0.5, 0.1)
    met = reference.speed_goal(speedups([*peers, fast_but_lossy, row("structured -> tflite_int8", "modelpress", 0.5, 0.6, 0.2)]), "w", None)
    assert (met["met"], met["artifact"], met["reached"]) == (True, "structured -> tflite_int8", "1.67x")
    assert "tflite_int8_ptq" in met["goal"]  # the scratch student is outside the gate: not the peer to beat
    missed = reference.speed_goal(speedups([*peers, fast_but_lossy, row("structured -> tflite_int8", "modelpress", 0.5, 0.8, 0.2)]), "w", None)
    assert (missed["met"], missed["reached"]) == (False, "1.25x")
    assert missed["why"] == "distilled -> tflite_int8 reaches 2.00x but loses 2.50 pp (gate 1.0 pp)"
    seeds = {"artifact": "structured -> tflite_int8", "seeds": [{}] * 3, "drop_mean_pp": 1.4, "drop_sd_pp": 0.6}
    unsteady = reference.speed_goal(speedups([*peers, row("structured -> tflite_int8", "modelpress", 0.5, 0.6, 0.2)]), "w", seeds)
    assert unsteady["met"] is False and "over 3 seeds +1.40 pp" in unsteady["reached"]
    assert unsteady["why"].endswith("its drop over the seeds averages +1.40 pp")


def test_size_goal_without_any_artifact_small_enough_names_the_smallest():
    rows = [row("tf_fp32_savedmodel", "peer", 0.0, 1.0, 1.0), row("a", "modelpress", 0.3, 1.0, 0.14), row("b", "modelpress", 1.5, 1.0, 0.12)]
    found = reference.size_goal(rows, "w", None)
    assert (found["met"], found["artifact"], found["reached"]) == (False, "a", "1/7.1 (0.140)")
    assert found["why"] == "no ModelPress artifact reaches it at any accuracy; the closest, b, reaches 1/8.3 (0.120) at +1.50 pp"


def test_distillation_goals_read_the_gap_and_what_was_handed_on():
    found = {"teacher_accuracy": 0.97, "scratch_accuracy": 0.93, "student_accuracy": 0.95, "gap_recovered": 0.5,
             "student_val_accuracy": 0.94, "scratch_val_accuracy": 0.95, "handed_on": "distilled", "val_examples": 380}
    gap, validation = reference.distillation_goals(found, "w")
    assert (gap["met"], gap["value"]) == (True, 0.5)
    assert validation["met"] is False and validation["value"] == pytest.approx(-1.0)
    assert validation["why"] == "the distilled student handed on is 1.00 pp below the scratch student on validation"
    _, fallback = reference.distillation_goals({**found, "handed_on": "scratch"}, "w")
    assert fallback["met"] is True and fallback["reached"].startswith("+0.00 pp: the scratch student")
    assert [g["met"] for g in reference.distillation_goals(None, "w")] == [False, False]


def test_search_goal_is_met_by_reaching_the_target_or_naming_the_closest():
    found = {"target": {"max_latency_ms": 0.2}, "peer": "tflite_int8_ptq"}
    reached = {"met": True, "selected": "structured_int8-tflite_int8", "verdict": "structured_int8-tflite_int8 meets the target"}
    closest = {"met": False, "selected": "ptq_int8-tflite_int8", "verdict": "no artifact meets it; closest ptq_int8-tflite_int8: p50 0.3 ms"}
    nothing = {"met": False, "selected": None, "verdict": "no artifact of the target's format was made"}
    assert reference.search_goal({**found, "search": reached})["met"] is True
    named = reference.search_goal({**found, "search": closest})
    assert named["met"] is True and named["reached"] == f"not met (max_latency_ms 0.2): {closest['verdict']}"
    assert reference.search_goal({**found, "search": nothing})["met"] is False
    failed = reference.search_goal({**found, "error": "UserError: no ladder"})
    assert failed["met"] is False and failed["why"] == "UserError: no ladder"


def test_wilson_interval_and_paired_drop_interval():
    low, high = wilson_interval(0.5, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert wilson_interval(1.0, 50)[1] == pytest.approx(1.0) and wilson_interval(1.0, 50)[0] < 0.95
    reference_correct = np.ones(1000, dtype=bool)
    worse = reference_correct.copy()
    worse[:20] = False  # 2 pp worse, on examples both answered
    low, high = paired_drop_interval(reference_correct, worse)
    assert 0 < low < 2.0 < high < 4.0
    assert paired_drop_interval(reference_correct, reference_correct) == (0.0, 0.0)


def test_latency_summary_takes_medians_over_the_repeats_and_the_p50_spread():
    repeats = [{"latency_ms_p50": p50, "latency_ms_p95": p50 * 2, "throughput_per_s": rate, "threads": 1}
               for p50, rate in [(1.0, 300.0), (3.0, 100.0), (2.0, 200.0)]]
    assert latency_summary(repeats) == {"latency_ms_p50": 2.0, "latency_ms_p95": 4.0, "latency_ms_p50_min": 1.0,
                                        "latency_ms_p50_max": 3.0, "throughput_per_s": 200.0, "repeats": 3, "threads": 1}


def test_round_robin_times_every_run_once_per_repeat_and_rotates():
    order = round_robin(["a", "b", "c"], 3)
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"), (2, "c"), (2, "a"), (2, "b")]


def test_pareto_front_keeps_only_undominated_rows():
    rows = [{"name": n, "accuracy": a, "latency_ms_p50": t} for n, a, t in
            [("fast", 0.90, 1.0), ("dominated", 0.89, 2.0), ("accurate", 0.95, 3.0), ("slow", 0.95, 4.0)]]
    assert [r["name"] for r in reference.pareto_front(rows, "latency_ms_p50")] == ["fast", "accurate"]


def test_text_table_aligns_numbers_right_and_text_left():
    table = text_table([{"a": "x", "n": 1234.5}, {"a": "longer", "n": 2.0}], [("name", "a", None), ("value", "n", "rate")])
    assert table.splitlines() == ["name    value", "------  -----", "x       1,234", "longer      2"]
