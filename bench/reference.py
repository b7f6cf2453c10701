"""`make bench`: ModelPress recipes side by side with the peers, in one run on one machine, under one protocol.

Three workloads (bench.recipes.WORKLOADS): a compute-bound MobileNetV2 on real digits (optdigits at 64x64 RGB), the
digits CNN, and a MobileNetV2 on synthetic images. On each: the peers (the FP32 model in TensorFlow, TFLite, OpenVINO
and onnxruntime; TFLite INT8 PTQ and NNCF INT8 of it and of the distillation student trained from scratch) and the
ModelPress recipes, each a workflow spec run through the plan, all measured by the validate step, round-robin, with
one thread and with every core. Prints one table per workload, the seeds, the goals and what limits a missed one;
writes bench/results/reference.json, reference.png (Pareto plots) and reference.html.

    python -m bench.reference [--quick] [--repeats N] [--seeds N] [--workloads NAME ...] [--out DIR]
"""

from __future__ import annotations

import base64
import contextlib
import copy
import html
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from modelpress.common.progress import log
from modelpress.contract.data_sources import DataSpec
from modelpress.io.data import load_dataset
from modelpress.io.report import figure_png, label_points

from .harness import (
    ALL_THREADS,
    STEP_ENV,
    WORK,
    Bench,
    bench_arguments,
    machine,
    paired_drop_interval,
    spread_ms,
    text_table,
    wilson_interval,
    write_json,
)
from .recipes import (
    GATES,
    PEER_TARGETS,
    PEERS,
    SCRATCH_PEERS,
    SEEDED,
    STUDENTS,
    WORKLOADS,
    recipes,
    scratch_student_workflow,
    search_ladder,
    workflow,
)

TF_PEER = PEERS["train"]
GATE_PP = GATES["max_drop"] * 100
ROW_FIELDS = ("workload", "name", "kind", "format", "runtime", "blessed", "accuracy", "drop_pp", "test_examples", "params",
              "size_bytes", "size_gzip_bytes", "latency_ms_p50", "latency_ms_p95", "latency_ms_p50_min", "latency_ms_p50_max",
              "repeats", "throughput_per_s", "threads", "latency_ms_p50_all_threads", "throughput_per_s_all_threads",
              "all_threads", "seed", "epochs", "train_seconds", "reasons", "uri", "validation_uri")
# Issue 18's goals.
REAL_DATA = "mobilenet_v2_optdigits"  # the compute-bound CNN on real data
DIGITS_CNN = "cnn_optdigits"
PEER_SPEEDUP_GOAL = 1.5  # batch-1 p50 (1 thread) at least 1.5x lower than the fastest peer within the gate
SIZE_GOAL = 10.0  # gzip size at most 1/10 of the TF FP32 SavedModel's
GAP_GOAL = 0.5  # distillation closes at least half of the teacher-vs-scratch accuracy gap
SEARCH_SPEEDUP = 2.0  # the search's target: this many times the best peer's batch-1 p50
DISTILLED = "distilled+int8"  # the recipe whose student the distillation goals read
RETIRED = [
    f"{DIGITS_CNN}: batch-1 speed vs the best peer (and vs TF FP32): retired by issue 18. A call costs microseconds in "
    "every runtime there, so a speed-up measures the interpreter's call cost, not compression (floor below)."
]
PROFILE_RUNS = 100
PERCENTILES = (2.5, 97.5)

COLUMNS = [("artifact", "name", None), ("kind", "kind", None), ("format", "format", None), ("accuracy", "accuracy", "acc"),
           ("95% CI", "accuracy_ci_text", None), ("drop pp", "drop_pp", "pp"), ("drop 95% CI", "drop_ci_text", None),
           ("size", "size_bytes", "bytes"), ("gzip", "size_gzip_bytes", "bytes"), ("gzip/TF", "size_ratio_tf", "acc"),
           ("p50 ms 1t", "latency_ms_p50", "ms"), ("p50 min-max", "spread", None), ("p95 ms", "latency_ms_p95", "ms"),
           ("p50 ms all", "latency_ms_p50_all_threads", "ms"), ("ex/s b32 1t", "throughput_per_s", "rate"),
           ("ex/s b32 all", "throughput_per_s_all_threads", "rate"), ("vs TF", "speedup_vs_tf", "ratio"),
           ("vs best peer", "speedup_vs_best_peer", "ratio"), ("blessed", "blessed", "yes"), ("epochs", "epochs_text", None),
           ("train s", "train_seconds", "rate")]


def quick_spec(spec: dict) -> dict:
    """The smoke-run version of a spec: every path once, tiny training, numbers meaningless."""
    spec = copy.deepcopy(spec)
    spec["train"]["epochs"] = 1
    ladder = spec.get("search", {}).get("ladder", [])
    for entry in [*spec.get("compress", []), *(entry for rung in ladder for entry in rung["compress"])]:
        if "epochs" in entry:
            entry["epochs"] = 1
    if spec["model"]["zoo"] == "mobilenet_v2":
        spec["model"]["params"] = {"alpha": 0.35}
        if spec["data"]["source"] == "generated":
            spec["data"]["samples"] = 400
        else:
            spec["data"]["resize"] = [32, 32]
    spec["evaluation"] = {**spec["evaluation"], "latency_runs": 20, "warmup_runs": 2}
    return spec


def same(spec: dict) -> dict:
    return spec


def target_format(target: str | dict) -> str:
    return target if isinstance(target, str) else target["format"]


def recipe_names(recipe: dict) -> dict[str, str]:
    """Plan artifact name -> row name of a recipe's targets."""
    return {target_format(t): f"{recipe['name']} -> {target_format(t)}" for t in recipe["targets"]}


def spec_name(workload: str) -> str:
    return f"bench-{workload.replace('_', '-')}"


def run_workload(bench: Bench, workload: str, quick: bool) -> tuple[list[dict], list[str]]:
    """Build the peers and every recipe of a workload, then measure them all together (round-robin); a recipe that
    cannot run is reported, not hidden."""
    adjust = quick_spec if quick else same
    pending = bench.build(adjust(workflow(workload, spec_name(workload), [], PEER_TARGETS)), workload, "peer", PEERS)
    if workload in STUDENTS:
        student = adjust(scratch_student_workflow(workload, f"{spec_name(workload)}-scratch"))
        pending += bench.build(student, workload, "peer", SCRATCH_PEERS)
    failures = []
    for recipe in recipes(workload):
        spec = adjust(workflow(workload, spec_name(workload), recipe["compress"], recipe["targets"]))
        try:
            pending += bench.build(spec, workload, "modelpress", recipe_names(recipe))
        except Exception as exc:  # e.g. a technique that cannot take this model: reported, the other recipes still run
            failures.append(f"{workload}: {recipe['name']} did not run: {type(exc).__name__}: {exc}")
            log(f"bench: {failures[-1]}")
    return [m.row(ROW_FIELDS) for m in bench.measure(pending)], failures


# ------------------------------------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class Splits:
    """What the analysis reads of a workload's data: the test labels and the size of the validation split."""

    test_labels: np.ndarray
    val_examples: int


def read_splits(data_spec: dict) -> Splits:
    """Loaded once per workload (MobileNetV2's upsampled images take tens of seconds to load)."""
    data = load_dataset(TypeAdapter(DataSpec).validate_python(data_spec))
    return Splits(data.head("test", data.count("test"))[1], data.count("val"))


def correct(row: dict, labels: np.ndarray) -> np.ndarray:
    """Which test examples an artifact got right (from its validation's predictions)."""
    return np.load(Path(row["validation_uri"]) / "predictions.npy") == labels


def compare(rows: list[dict], labels: dict[str, np.ndarray]) -> None:
    """Every row against its workload's trained FP32 model (TF_PEER): drop with a paired 95% interval, blessed when
    the drop is within the gate (so a scratch student is judged against the same teacher as a recipe), accuracy with
    its Wilson interval; size and speed relative to TF FP32 and to the fastest blessed peer."""
    for workload in dict.fromkeys(row["workload"] for row in rows):
        mine = [row for row in rows if row["workload"] == workload]
        reference = next(row for row in mine if row["name"] == TF_PEER)
        reference_correct = correct(reference, labels[workload])
        for row in mine:
            row["drop_pp"] = round((reference["accuracy"] - row["accuracy"]) * 100, 4)
            row["blessed"] = row["drop_pp"] <= GATE_PP + 1e-9
            row["accuracy_ci"] = wilson_interval(row["accuracy"], row["test_examples"])
            row["drop_ci_pp"] = paired_drop_interval(reference_correct, correct(row, labels[workload]))
        peer = best_peer(mine)
        for row in mine:
            row["size_ratio_tf"] = row["size_gzip_bytes"] / reference["size_gzip_bytes"]
            row["speedup_vs_tf"] = reference["latency_ms_p50"] / row["latency_ms_p50"]
            row["speedup_vs_best_peer"] = peer["latency_ms_p50"] / row["latency_ms_p50"] if peer else None


def best_peer(rows: list[dict]) -> dict | None:
    """The fastest peer (1 thread) within the gate of the workload's FP32 model."""
    return min((row for row in rows if row["kind"] == "peer" and row["blessed"]), key=lambda row: row["latency_ms_p50"], default=None)


def ours(rows: list[dict], workload: str, blessed: bool = True) -> list[dict]:
    return [row for row in rows if row["workload"] == workload and row["kind"] == "modelpress" and (row["blessed"] or not blessed)]


# ---------------------------------------------------------------------------------------------------------- seeds
def run_seeds(rows: list[dict], workload: str, seeds: int, quick: bool) -> dict:
    """The workload's FP32 model and its headline recipe (the one of its best blessed ModelPress artifact on seed 0 by
    SEEDED's measure) trained again with seeds 1..seeds-1: the accuracy of both and the drop, per seed, with mean and
    spread."""
    headline = min(ours(rows, workload), key=lambda row: row[SEEDED[workload]], default=None)
    if headline is None:
        return {"workload": workload, "artifact": None, "reason": "no blessed ModelPress artifact on seed 0 to repeat"}
    recipe_name, target = headline["name"].split(" -> ")
    recipe = next(r for r in recipes(workload) if r["name"] == recipe_name)
    targets = [t for t in recipe["targets"] if target_format(t) == target]
    bench = Bench(WORK / "reference-seeds" / workload, repeats=1, threads=(1,))  # accuracy is what varies with the seed
    adjust = quick_spec if quick else same
    pending = []
    for seed in range(1, seeds):
        spec = adjust(workflow(workload, spec_name(workload), recipe["compress"], targets, seed=seed))
        pending += bench.build(spec, workload, "modelpress", {target: headline["name"]})
    reference = next(row for row in rows if row["workload"] == workload and row["name"] == TF_PEER)
    per_seed = [{"seed": 0, "fp32_accuracy": reference["accuracy"], "accuracy": headline["accuracy"], "drop_pp": headline["drop_pp"]}]
    per_seed += [{"seed": m.seed, "fp32_accuracy": m.baseline_accuracy, "accuracy": m.accuracy, "drop_pp": m.drop_pp}
                 for m in bench.measure(pending)]
    drops, fp32 = [s["drop_pp"] for s in per_seed], [s["fp32_accuracy"] for s in per_seed]
    return {"workload": workload, "artifact": headline["name"], "seeds": per_seed,
            "fp32_mean": statistics.mean(fp32), "fp32_sd": statistics.stdev(fp32) if len(fp32) > 1 else 0.0,
            "drop_mean_pp": statistics.mean(drops), "drop_sd_pp": statistics.stdev(drops) if len(drops) > 1 else 0.0,
            "drop_min_pp": min(drops), "drop_max_pp": max(drops), "train_seconds": round(sum(bench.seconds.values()), 1)}


def seeds_text(seeds: list[dict]) -> str:
    lines = ["== seeds: the FP32 model and the headline recipe trained again (accuracy on the same test split) =="]
    for entry in seeds:
        if entry["artifact"] is None:
            lines.append(f"{entry['workload']}: not run: {entry['reason']}")
            continue
        lines.append(f"{entry['workload']}: {entry['artifact']} over {len(entry['seeds'])} seeds: FP32 {entry['fp32_mean']:.4f} "
                     f"(sd {entry['fp32_sd']:.4f}), drop {entry['drop_mean_pp']:+.2f} pp (sd {entry['drop_sd_pp']:.2f}, "
                     f"{entry['drop_min_pp']:+.2f} to {entry['drop_max_pp']:+.2f})")
        lines += [f"    seed {s['seed']}: FP32 {s['fp32_accuracy']:.4f}, artifact {s['accuracy']:.4f}, drop {s['drop_pp']:+.2f} pp"
                  for s in entry["seeds"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- distillation
DISTILL_FIGURES = ("teacher_accuracy", "scratch_accuracy", "student_accuracy", "gap_recovered", "scratch_val_accuracy",
                   "student_val_accuracy", "handed_on")


def distillation(rows: list[dict], workload: str, val_examples: int) -> dict | None:
    """What the distill step recorded for the recipe's student: teacher, scratch and distilled accuracy on the test
    split and the gap recovered; both students' accuracy on the validation split and which one it handed on."""
    distilled = next((row for row in ours(rows, workload, blessed=False) if row["name"].startswith(f"{DISTILLED} ->")), None)
    if distilled is None:
        return None
    student_uri = json.loads((Path(distilled["uri"]) / "artifact.json").read_text())["parent"]
    recorded = json.loads((Path(student_uri) / "artifact.json").read_text())["metrics"]
    return {"workload": workload, **{key: recorded.get(key) for key in DISTILL_FIGURES}, "val_examples": val_examples}


# ---------------------------------------------------------------------------------------------------------- search
def run_search(rows: list[dict], quick: bool) -> dict:
    """A workflow with a `search:` section on the real-data workload, run as `modelpress run` runs it, its target
    SEARCH_SPEEDUP times the best peer's batch-1 p50. The search times each artifact with its own validate (one run)."""
    from modelpress.contract.workflow import parse_workflow
    from modelpress.execution.runner import run_workflow

    peer = best_peer([row for row in rows if row["workload"] == REAL_DATA])
    if peer is None:
        return {"error": "no peer within the gate to set the target from"}
    target = {"max_latency_ms": round(peer["latency_ms_p50"] / SEARCH_SPEEDUP, 4)}
    spec = workflow(REAL_DATA, "bench-search", [], [])
    del spec["compress"], spec["targets"]
    spec["search"] = {"target": target, "ladder": search_ladder(REAL_DATA)}
    spec = quick_spec(spec) if quick else spec
    started = time.monotonic()
    found = {"target": target, "peer": peer["name"], "peer_p50_ms": peer["latency_ms_p50"]}
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the run prints its own tables; stdout carries the bench's report
            summary = run_workflow(parse_workflow(spec, source="bench search spec"), str(WORK / "reference-search"), overwrite=True)
    except Exception as exc:  # reported as the goal's reason
        return {**found, "error": f"{type(exc).__name__}: {exc}"}
    return {**found, "search": summary.get("search"), "seconds": round(time.monotonic() - started, 1)}


# ---------------------------------------------------------------------------------------------------------- goals
def goal(workload: str, text: str, artifact: str | None, reached: str, value: float | None, met: bool | None, why: str | None = None) -> dict:
    return {"workload": workload, "goal": text, "artifact": artifact, "reached": reached, "value": value, "met": met,
            "why": why if met is False else None}


def ratio_goal(rows: list[dict], workload: str, key: str, limit: float, text: str, shown, seeds: dict | None) -> dict:
    """A goal on the best blessed ModelPress artifact of a workload: speed-up vs the best peer (at least `limit`) or
    gzip size vs TF FP32 (at most `limit`). Missed: the measured reason, i.e. the artifact that reaches the limit
    with the least drop, or the best value reached at any accuracy. With seeds for that artifact, their mean drop
    must stay within the gate too."""
    at_most = key == "size_ratio_tf"
    better = min if at_most else max
    reaches = (lambda v: v <= limit) if at_most else (lambda v: v >= limit)
    blessed = [row for row in ours(rows, workload) if row[key] is not None]
    best = better(blessed, key=lambda row: row[key], default=None)
    if best is None:
        value, met, reached = None, False, "no blessed ModelPress artifact"
    else:
        value, met, reached = best[key], reaches(best[key]), shown(best[key])
        if seeds and seeds.get("artifact") == best["name"]:
            reached += f"; drop over {len(seeds['seeds'])} seeds {seeds['drop_mean_pp']:+.2f} pp (sd {seeds['drop_sd_pp']:.2f})"
            met = met and seeds["drop_mean_pp"] <= GATE_PP
    why = None
    if not met:
        candidates = [row for row in ours(rows, workload, blessed=False) if row[key] is not None]
        within = [row for row in candidates if reaches(row[key])]
        if best is not None and reaches(best[key]):
            why = f"{best['name']} reaches {shown(best[key])} on seed 0, but its drop over the seeds averages {seeds['drop_mean_pp']:+.2f} pp"
        elif within:
            closest = min(within, key=lambda row: row["drop_pp"])
            why = f"{closest['name']} reaches {shown(closest[key])} but loses {closest['drop_pp']:.2f} pp (gate {GATE_PP:.1f} pp)"
        elif candidates:
            closest = better(candidates, key=lambda row: row[key])
            why = f"no ModelPress artifact reaches it at any accuracy; the closest, {closest['name']}, reaches {shown(closest[key])} at {closest['drop_pp']:+.2f} pp"
        else:
            why = "no ModelPress artifact was made"
    return goal(workload, text, best["name"] if best else None, reached, value, met, why)


def speed_goal(rows: list[dict], workload: str, seeds: dict | None) -> dict:
    peer = best_peer([row for row in rows if row["workload"] == workload])
    text = f"batch-1 p50 (1 thread) >= {PEER_SPEEDUP_GOAL}x faster than the best peer ({peer['name'] if peer else 'none blessed'}) at <= {GATE_PP:.1f} pp"
    return ratio_goal(rows, workload, "speedup_vs_best_peer", PEER_SPEEDUP_GOAL, text, lambda v: f"{v:.2f}x", seeds)


def size_goal(rows: list[dict], workload: str, seeds: dict | None) -> dict:
    text = f"gzip size <= 1/{SIZE_GOAL:.0f} of TF FP32 at <= {GATE_PP:.1f} pp"
    return ratio_goal(rows, workload, "size_ratio_tf", 1 / SIZE_GOAL, text, lambda v: f"1/{1 / v:.1f} ({v:.3f})", seeds)


def distillation_goals(found: dict | None, workload: str) -> list[dict]:
    gap_text = f"distillation recovers >= {GAP_GOAL:.0%} of the teacher-vs-scratch gap (test split)"
    val_text = "the student handed on is not below the same student from scratch on validation"
    if found is None:
        why = f"the {DISTILLED} recipe did not run"
        return [goal(workload, gap_text, None, "not measured", None, False, why), goal(workload, val_text, None, "not measured", None, False, why)]
    gap = found["gap_recovered"]
    accuracies = f"teacher {found['teacher_accuracy']:.4f}, scratch {found['scratch_accuracy']:.4f}, distilled {found['student_accuracy']:.4f}"
    if gap is None:
        gap_goal = goal(workload, gap_text, DISTILLED, f"no gap: {accuracies}", None, None)
    else:
        gap_goal = goal(workload, gap_text, DISTILLED, f"{gap:.0%} ({accuracies})", gap, gap >= GAP_GOAL,
                        f"the distilled student closes {gap:.0%} of the gap: {accuracies}")
    scratch = found["scratch_val_accuracy"]
    handed = found["student_val_accuracy"] if found["handed_on"] == "distilled" else scratch
    margin = (handed - scratch) * 100
    val_goal = goal(workload, val_text, DISTILLED, f"{margin:+.2f} pp: the {found['handed_on']} student ({handed:.4f} vs scratch "
                    f"{scratch:.4f}, {found['val_examples']} validation images)", margin, margin >= 0,
                    f"the {found['handed_on']} student handed on is {-margin:.2f} pp below the scratch student on validation")
    return [gap_goal, val_goal]


def search_goal(found: dict) -> dict:
    """Met when the search reaches the target or names the closest artifact and why it falls short."""
    text = f"the search reaches {SEARCH_SPEEDUP:.0f}x the best peer's speed ({found.get('peer', '-')}) or names the closest recipe and why"
    if "error" in found:
        return goal(REAL_DATA, text, None, f"the search did not run: {found['error']}", None, False, found["error"])
    search = found["search"]
    if search is None:
        return goal(REAL_DATA, text, None, "the run has no search table", None, False, "the select step wrote no search table")
    named = search["selected"] is not None  # the selection when met, else the closest
    reached = f"{'met' if search['met'] else 'not met'} (max_latency_ms {found['target']['max_latency_ms']}): {search['verdict']}"
    return goal(REAL_DATA, text, search["selected"], reached, None, named, search["verdict"])


def all_goals(rows: list[dict], seeds: list[dict], distilled: dict[str, dict | None], search: dict | None) -> list[dict]:
    workloads = set(row["workload"] for row in rows)
    by_workload = {entry["workload"]: entry for entry in seeds}
    found = []
    if REAL_DATA in workloads:
        found += [speed_goal(rows, REAL_DATA, by_workload.get(REAL_DATA)), size_goal(rows, REAL_DATA, by_workload.get(REAL_DATA))]
    if DIGITS_CNN in workloads:
        found.append(size_goal(rows, DIGITS_CNN, by_workload.get(DIGITS_CNN)))
    for workload in (DIGITS_CNN, REAL_DATA):
        if workload in workloads:
            found += distillation_goals(distilled.get(workload), workload)
    return found + ([search_goal(search)] if search is not None else [])


# ------------------------------------------------------------------------------------------------- what limits them
def profile(row: dict, data: dict, threads: int | None) -> dict:
    """OpenVINO's per-layer counters for an OpenVINO artifact, in a fresh process (bench.profile)."""
    meta = json.loads((Path(row["uri"]) / "artifact.json").read_text())
    command = [sys.executable, "-m", "bench.profile", str(Path(row["uri"]) / meta["model_path"]), "--data", json.dumps(data),
               "--threads", str(threads or 1), "--runs", str(PROFILE_RUNS)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ, **STEP_ENV})
    if completed.returncode != 0:
        return {"artifact": row["name"], "error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return {"workload": row["workload"], "artifact": row["name"], **json.loads(completed.stdout)}


def speed_profiles(rows: list[dict], goal_rows: list[dict], data_specs: dict[str, dict]) -> list[dict]:
    """Where a speed goal is missed: OpenVINO's per-layer time for the fastest blessed OpenVINO peer and the fastest
    blessed ModelPress OpenVINO artifact, so what bounds each latency is measured rather than guessed."""
    missed = {g["workload"] for g in goal_rows if g["met"] is False and "faster" in g["goal"]}
    profiles = []
    for workload in sorted(missed):
        openvino = [row for row in rows if row["workload"] == workload and row["runtime"] == "openvino" and row["blessed"]]
        for kind in ("peer", "modelpress"):
            row = min((row for row in openvino if row["kind"] == kind), key=lambda row: row["latency_ms_p50"], default=None)
            if row is not None:
                log(f"bench: per-layer profile of {workload} {row['name']}")
                profiles.append(profile(row, data_specs[workload], row["threads"]))
    return profiles


def runtime_floor(rows: list[dict], workload: str) -> dict | None:
    """In the runtime of the fastest blessed ModelPress artifact, how the p50 of the model with the fewest parameters
    compares with that artifact's, beside how far parameters fell from the TF baseline. When parameters fall much
    faster than latency, the runtime's fixed per-call cost, not the model, bounds the speed-up."""
    mine = [row for row in rows if row["workload"] == workload]
    fastest = min(ours(rows, workload), key=lambda row: row["latency_ms_p50"], default=None)
    if fastest is None:
        return None
    tf = next(row for row in mine if row["name"] == TF_PEER)
    smallest = min((row for row in mine if row["runtime"] == fastest["runtime"] and row["params"]), key=lambda row: row["params"])
    return {"workload": workload, "runtime": fastest["runtime"], "smallest": smallest["name"], "smallest_params": smallest["params"],
            "smallest_p50_ms": smallest["latency_ms_p50"], "baseline_params": tf["params"], "fastest": fastest["name"],
            "fastest_p50_ms": fastest["latency_ms_p50"], "params_fell": tf["params"] / smallest["params"],
            "p50_fell": fastest["latency_ms_p50"] / smallest["latency_ms_p50"]}


def limits_text(goal_rows: list[dict], profiles: list[dict], floors: list[dict], top: int = 5) -> str:
    lines = ["== what limits the missed goals (measured) =="]
    lines += [f"{g['workload']}: {g['goal']}: {g['why']}" for g in goal_rows if g["met"] is False]
    for floor in floors:
        lines.append(
            f"{floor['workload']} {floor['runtime']} floor: the model with the fewest parameters there ({floor['smallest']}, "
            f"{floor['smallest_params']:,} params, {floor['params_fell']:.0f}x fewer than the baseline) runs at p50 "
            f"{floor['smallest_p50_ms']:.4f} ms; the fastest blessed ModelPress artifact ({floor['fastest']}) at "
            f"{floor['fastest_p50_ms']:.4f} ms, only {floor['p50_fell']:.2f}x above it"
        )
    if profiles:
        lines.append("OpenVINO per-layer counters (median per call, 1 thread, batch 1):")
    for entry in profiles:
        if "error" in entry:
            lines.append(f"{entry['artifact']}: profile failed: {entry['error']}")
            continue
        overhead = entry["wall_us_p50"] - entry["layer_us_total"]
        summary = (f"{entry['workload']} {entry['artifact']}: layers {entry['layer_us_total']:.1f} us of {entry['wall_us_p50']:.1f} us "
                   f"per call (p50 wall)")
        if overhead >= 0:
            lines.append(f"{summary}; {overhead:.1f} us ({overhead / entry['wall_us_p50']:.0%}) outside the layers")
        else:  # seen with OpenVINO's quantized FullyConnected nodes on tiny models: their counters are not wall time
            lines.append(f"{summary}; the counters add up to more than the measured wall time, so they are not wall-clock times here")
        for layer in entry["layers"][:top]:
            lines.append(f"    {layer['us']:9.1f} us  {layer['type']:<16} {layer['exec_type']:<24} {layer['layer']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- output
def describe(workload: str, rows: list[dict], data_spec: dict) -> str:
    """A workload's title: its data (real or synthetic), test size and what 1 pp is in examples."""
    test = next(row["test_examples"] for row in rows if row["workload"] == workload)
    kind = "SYNTHETIC generated images" if data_spec["source"] == "generated" else f"real data ({data_spec['source']})"
    return f"== {workload}: {kind}, {test} test examples (1 pp = {test / 100:.0f}) =="


def epochs_text(epochs: dict[str, int]) -> str:
    return " + ".join(f"{step} {count}" for step, count in epochs.items()) or "-"


def interval_text(low: float, high: float, digits: int = 4, sign: str = "") -> str:
    return f"{low:{sign}.{digits}f}..{high:{sign}.{digits}f}"


def workload_table(rows: list[dict], workload: str, data_spec: dict) -> str:
    mine = [{**row, "spread": spread_ms(row), "epochs_text": epochs_text(row["epochs"]),
             "accuracy_ci_text": interval_text(*row["accuracy_ci"]), "drop_ci_text": interval_text(*row["drop_ci_pp"], 2, "+")}
            for row in rows if row["workload"] == workload]
    all_threads = next((row["all_threads"] for row in mine if row["all_threads"]), ALL_THREADS)
    note = (f"1t: 1 thread, all: {all_threads} threads; p50 batch 1, ex/s batch 32; drop vs {TF_PEER} with a paired bootstrap "
            f"interval; blessed: drop <= {GATE_PP:.1f} pp; epochs and seconds: every step that made the artifact")
    return "\n".join([describe(workload, rows, data_spec), note, text_table(mine, COLUMNS)])


def goals_table(goal_rows: list[dict], retired: list[str]) -> str:
    shown = [{**g, "artifact": g["artifact"] or "-", "met": {True: "yes", False: "NO", None: "-"}[g["met"]]} for g in goal_rows]
    table = text_table(shown, [("workload", "workload", None), ("goal", "goal", None), ("best artifact", "artifact", None),
                               ("reached", "reached", None), ("met", "met", None)], title="== goals ==")
    return "\n".join([table, *(f"retired: {line}" for line in retired)])


def pareto_png(rows: list[dict]) -> bytes:
    """Per workload: accuracy vs batch-1 p50 and accuracy vs gzip size; the Pareto front (no artifact both more
    accurate and cheaper) drawn as a step line."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    fig, axes = plt.subplots(len(workloads), 2, figsize=(13, 4.2 * len(workloads)), squeeze=False)
    for line, workload in zip(axes, workloads, strict=True):
        mine = [row for row in rows if row["workload"] == workload]
        for axis, key, label in ((line[0], "latency_ms_p50", "batch-1 latency p50, 1 thread (ms, log)"), (line[1], "size_gzip_bytes", "size gzip (bytes, log)")):
            for row in mine:
                color = "tab:orange" if row["kind"] == "modelpress" else "tab:blue"
                axis.scatter(row[key], row["accuracy"], color=color, marker="o" if row["blessed"] else "x", s=45)
            front = pareto_front(mine, key)
            axis.step([row[key] for row in front], [row["accuracy"] for row in front], where="post", color="grey", alpha=0.6)
            axis.set_xscale("log")
            label_points(axis, [(row[key], row["accuracy"], row["name"]) for row in mine])
            axis.set_xlabel(label)
            axis.set_ylabel("test accuracy")
            axis.set_title(workload)
            axis.grid(True, alpha=0.3)
    fig.suptitle(f"blue: peers, orange: ModelPress; o blessed (<= {GATE_PP:.1f} pp drop), x not; grey: Pareto front")
    return figure_png(fig, dpi=100)


def pareto_front(rows: list[dict], cost: str) -> list[dict]:
    """The rows no other row beats on both accuracy and `cost`, cheapest first."""
    front, best = [], -1.0
    for row in sorted(rows, key=lambda row: (row[cost], -row["accuracy"])):
        if row["accuracy"] > best:
            front.append(row)
            best = row["accuracy"]
    return front


def html_page(payload: dict, text: str, png: bytes) -> str:
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ModelPress reference benchmark</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }} pre {{ font-size: 12px; }} img {{ max-width: 100%; }}</style>
</head><body>
<h1>ModelPress reference benchmark</h1>
<p>{html.escape(payload['created'])} · {html.escape(payload['machine']['cpu'])}, {payload['machine']['cores']} cores,
load average at the end {payload['machine']['load_average_1_5_15']} · {payload['seconds']:.0f} s</p>
<pre>{html.escape(text)}</pre>
<h2>Accuracy vs latency and vs size</h2>
<img alt="Pareto plots: accuracy vs latency, accuracy vs size" src="data:image/png;base64,{image}">
</body></html>
"""


def report(rows: list[dict], failures: list[str], out: Path, extras: dict, data_specs: dict[str, dict],
           seeds: list[dict] = (), search: dict | None = None, profile_limits: bool = True,
           splits: dict[str, Splits] | None = None) -> str:
    """Comparisons, goals, limits; write reference.json, reference.png and reference.html; return the printed text.
    `splits`: each workload's, when the caller has read them already."""
    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    splits = splits or {w: read_splits(data_specs[w]) for w in workloads}
    compare(rows, {w: splits[w].test_labels for w in workloads})
    distilled = {w: distillation(rows, w, splits[w].val_examples) for w in workloads if w in (DIGITS_CNN, REAL_DATA)}
    goal_rows = all_goals(rows, list(seeds), distilled, search)
    profiles = speed_profiles(rows, goal_rows, data_specs) if profile_limits else []
    floors = [floor for floor in (runtime_floor(rows, DIGITS_CNN),) if floor] if DIGITS_CNN in workloads else []
    sections = [workload_table(rows, workload, data_specs[workload]) for workload in workloads]
    if seeds:
        sections.append(seeds_text(list(seeds)))
    retired = RETIRED if DIGITS_CNN in workloads else []
    sections.append(goals_table(goal_rows, retired))
    if floors or profiles or any(g["met"] is False for g in goal_rows):
        sections.append(limits_text(goal_rows, profiles, floors))
    if failures:
        sections.append("\n".join(["== recipes that did not run ==", *failures]))
    payload = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **extras,
               "rows": rows, "seeds": list(seeds), "distillation": distilled, "search": search, "goals": goal_rows, "retired": retired,
               "floors": floors, "profiles": profiles, "failures": failures}
    text = "\n\n".join(sections)
    png = pareto_png(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "reference.json", payload)
    (out / "reference.png").write_bytes(png)
    (out / "reference.html").write_text(html_page(payload, text, png))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments("python -m bench.reference", __doc__.splitlines()[0], "workloads", list(WORKLOADS))
    parser.add_argument("--seeds", type=int, default=3, help=f"seeds of the FP32 model and headline recipe on {', '.join(SEEDED)}")
    args = parser.parse_args(argv)
    started = time.monotonic()
    repeats = 1 if args.quick else args.repeats
    bench = Bench(WORK / "reference", repeats=repeats, threads=(1, ALL_THREADS))
    rows, failures = [], []
    for workload in args.workloads:
        workload_rows, workload_failures = run_workload(bench, workload, args.quick)
        rows += workload_rows
        failures += workload_failures
    data_specs = {w: (quick_spec if args.quick else same)(workflow(w, "x", [], []))["data"] for w in args.workloads}
    seeded = [w for w in args.workloads if w in SEEDED and args.seeds > 1]
    splits = {w: read_splits(data_specs[w]) for w in args.workloads}
    compare(rows, {w: splits[w].test_labels for w in args.workloads})  # the seeds and the search read the best peer
    seeds = [run_seeds(rows, w, args.seeds, args.quick) for w in seeded]
    search = run_search(rows, args.quick) if REAL_DATA in args.workloads else None
    extras = {"seconds": round(time.monotonic() - started, 1), "step_seconds": {k: round(v, 1) for k, v in bench.seconds.items()},
              "quick": args.quick, "repeats": bench.repeats, "threads": list(bench.threads), "students": {w: STUDENTS[w] for w in args.workloads}}
    text = report(rows, failures, args.out, extras, data_specs, seeds, search, splits=splits)
    print(text)
    seconds = time.monotonic() - started
    print(f"\n{len(rows)} artifacts measured in {seconds:.0f}s ({seconds / 60:.1f} min) on {os.cpu_count()} cores; "
          f"written to {args.out}/reference.json, reference.png, reference.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
