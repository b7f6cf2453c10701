"""`make bench`: ModelPress recipes side by side with the peers' out-of-the-box artifacts, in one run on one machine.

Three workloads (bench.recipes.WORKLOADS). On each: the peers (TF FP32 SavedModel in TensorFlow, TFLite FP32,
dynamic-range and full-INT8 PTQ, OpenVINO FP32 and nncf INT8) and the ModelPress recipes, every one a workflow spec
run through the plan and measured by the validate step in its own process, on the same test split. Prints one table
per workload and the goals, writes bench/results/reference.json, reference.png (Pareto plots) and reference.html.

    python -m bench.reference [--quick] [--repeats N] [--workloads NAME ...] [--out DIR]
"""

from __future__ import annotations

import base64
import copy
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from modelpress.common.progress import log
from modelpress.io.report import figure_png, label_points

from .harness import STEP_ENV, WORK, Bench, bench_arguments, machine, spread_ms, text_table, write_json
from .recipes import PEER_TARGETS, PEERS, STUDENTS, WORKLOADS, recipes, workflow

TF_PEER = PEERS["train"]
ROW_FIELDS = ("workload", "name", "kind", "format", "runtime", "blessed", "accuracy", "drop_pp", "params", "size_bytes",
              "size_gzip_bytes", "latency_ms_p50", "latency_ms_p95", "latency_ms_p50_min", "latency_ms_p50_max", "repeats",
              "throughput_per_s", "threads", "reasons", "uri")
# The goals of issue 8, for the best blessed ModelPress artifact of a workload (blessed: at most 1.0 pp drop).
SIZE_GOAL = 10.0  # gzip size at most 1/10 of the TF FP32 SavedModel's
TF_SPEEDUP_GOAL = 8.0  # p50 at least 8x lower than TF FP32's
PEER_SPEEDUP_GOAL = 1.3  # p50 at least 1.3x lower than the fastest blessed peer's
PROFILE_RUNS = 100
PROFILED_ARTIFACTS = 3  # per workload with a missed speed goal

COLUMNS = [("artifact", "name", None), ("kind", "kind", None), ("format", "format", None), ("accuracy", "accuracy", "acc"),
           ("drop pp", "drop_pp", "pp"), ("size", "size_bytes", "bytes"), ("gzip", "size_gzip_bytes", "bytes"),
           ("gzip/TF", "size_ratio_tf", "acc"), ("p50 ms", "latency_ms_p50", "ms"), ("p50 min-max", "spread", None),
           ("p95 ms", "latency_ms_p95", "ms"), ("vs TF", "speedup_vs_tf", "ratio"), ("vs best peer", "speedup_vs_best_peer", "ratio"),
           ("ex/s", "throughput_per_s", "rate"), ("blessed", "blessed", "yes")]


def quick_spec(spec: dict) -> dict:
    """The smoke-run version of a spec: every path once, tiny training, numbers meaningless."""
    spec = copy.deepcopy(spec)
    spec["train"]["epochs"] = 1
    for entry in spec["compress"]:
        entry["epochs"] = 1
    if spec["model"]["zoo"] == "mobilenet_v2":
        spec["model"]["params"] = {"alpha": 0.35, "input_size": 32}
        spec["data"].update(samples=200, image_size=[32, 32])
        for entry in spec["compress"]:
            if entry["technique"] == "distill":
                entry["student"] = {"zoo": "mobilenet_v2", "params": {"alpha": 0.35, "input_size": 32}}
    spec["evaluation"] = {**spec["evaluation"], "latency_runs": 20, "warmup_runs": 2}
    return spec


def run_workload(bench: Bench, workload: str, quick: bool) -> tuple[list[dict], list[str]]:
    """Measure the peers and every recipe of a workload; a recipe that cannot run is reported, not hidden."""
    adjust = quick_spec if quick else (lambda spec: spec)
    measured = bench.run_spec(adjust(workflow(workload, f"bench-{workload.replace('_', '-')}", [], PEER_TARGETS)),
                              workload, "peer", PEERS)
    failures = []
    for recipe in recipes(workload):
        spec = adjust(workflow(workload, f"bench-{workload.replace('_', '-')}", recipe["compress"], recipe["targets"]))
        names = {target["format"]: f"{recipe['name']} -> {target['format']}" for target in recipe["targets"]}
        try:
            measured += bench.run_spec(spec, workload, "modelpress", names)
        except Exception as exc:  # e.g. a technique that cannot take this model: reported, the other recipes still run
            failures.append(f"{workload}: {recipe['name']} did not run: {type(exc).__name__}: {exc}")
            log(f"bench: {failures[-1]}")
    return [m.row(ROW_FIELDS) for m in measured], failures


def add_ratios(rows: list[dict]) -> None:
    """Size and speed relative to the workload's TF FP32 SavedModel and to its fastest blessed peer."""
    for workload in {row["workload"] for row in rows}:
        mine = [row for row in rows if row["workload"] == workload]
        tf = next(row for row in mine if row["name"] == TF_PEER)
        peer = best_peer(mine)
        for row in mine:
            row["size_ratio_tf"] = row["size_gzip_bytes"] / tf["size_gzip_bytes"]
            row["speedup_vs_tf"] = tf["latency_ms_p50"] / row["latency_ms_p50"]
            row["speedup_vs_best_peer"] = peer["latency_ms_p50"] / row["latency_ms_p50"] if peer else None


def best_peer(rows: list[dict]) -> dict | None:
    """The fastest peer that passes the same gate (at most 1.0 pp drop)."""
    return min((row for row in rows if row["kind"] == "peer" and row["blessed"]), key=lambda row: row["latency_ms_p50"], default=None)


def goals(rows: list[dict], workload: str) -> list[dict]:
    """Each goal of issue 8 on a workload: the best blessed ModelPress artifact for it, the value reached, met or not."""
    mine = [row for row in rows if row["workload"] == workload]
    ours = [row for row in mine if row["kind"] == "modelpress" and row["blessed"]]
    smallest = min(ours, key=lambda row: row["size_gzip_bytes"], default=None)
    fastest = min(ours, key=lambda row: row["latency_ms_p50"], default=None)
    peer = best_peer(mine)

    def goal(text: str, row: dict | None, key: str, limit: float, shown) -> dict:
        value = row.get(key) if row else None
        if row is None:  # nothing ModelPress made passed the gate: the goal is missed
            met = False
        else:
            met = None if value is None else (value <= limit if key == "size_ratio_tf" else value >= limit)
        return {"workload": workload, "goal": text, "artifact": row["name"] if row else None,
                "reached": shown(value) if value is not None else "no blessed ModelPress artifact", "value": value, "met": met}

    return [
        goal(f"gzip size <= 1/{SIZE_GOAL:.0f} of TF FP32 at <= 1.0 pp drop", smallest, "size_ratio_tf", 1 / SIZE_GOAL,
             lambda v: f"1/{1 / v:.1f} ({v:.3f})"),
        goal(f"p50 >= {TF_SPEEDUP_GOAL:.0f}x faster than TF FP32", fastest, "speedup_vs_tf", TF_SPEEDUP_GOAL, lambda v: f"{v:.1f}x"),
        goal(f"p50 >= {PEER_SPEEDUP_GOAL}x faster than the best peer ({peer['name'] if peer else 'none blessed'})", fastest,
             "speedup_vs_best_peer", PEER_SPEEDUP_GOAL, lambda v: f"{v:.2f}x"),
    ]


def profile(row: dict, data: dict, threads: int | None) -> dict:
    """OpenVINO's per-layer counters for an OpenVINO artifact, in a fresh process (bench.profile)."""
    meta = json.loads((Path(row["uri"]) / "artifact.json").read_text())
    command = [sys.executable, "-m", "bench.profile", str(Path(row["uri"]) / meta["model_path"]), "--data", json.dumps(data),
               "--threads", str(threads or 1), "--runs", str(PROFILE_RUNS)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ, **STEP_ENV})
    if completed.returncode != 0:
        return {"artifact": row["name"], "error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return {"workload": row["workload"], "artifact": row["name"], **json.loads(completed.stdout)}


def limits(rows: list[dict], goal_rows: list[dict], data_specs: dict[str, dict]) -> list[dict]:
    """Where a speed goal is missed: OpenVINO's per-layer time for the workload's PROFILED_ARTIFACTS slowest OpenVINO
    artifacts (peers and ours), so what bounds the latency is measured rather than guessed."""
    missed = {g["workload"] for g in goal_rows if g["met"] is False and "faster" in g["goal"]}
    profiles = []
    for workload in sorted(missed):
        candidates = [row for row in rows if row["workload"] == workload and row["format"].startswith("openvino")]
        for row in sorted(candidates, key=lambda row: -row["latency_ms_p50"])[:PROFILED_ARTIFACTS]:
            log(f"bench: per-layer profile of {workload} {row['name']}")
            profiles.append(profile(row, data_specs[workload], row["threads"]))
    return profiles


def runtime_floors(rows: list[dict], goal_rows: list[dict]) -> list[dict]:
    """Where a speed goal is missed: in the runtime of the fastest blessed ModelPress artifact, how the p50 of the
    model with the fewest parameters compares with the TF baseline's parameters. When parameters fall much faster
    than latency, the runtime's fixed per-call cost, not the model, bounds the speed-up."""
    floors = []
    for goal in goal_rows:
        if goal["met"] is not False or "best peer" not in goal["goal"] or goal["artifact"] is None:
            continue
        mine = [row for row in rows if row["workload"] == goal["workload"]]
        fastest = next(row for row in mine if row["name"] == goal["artifact"])
        tf = next(row for row in mine if row["name"] == TF_PEER)
        smallest = min((row for row in mine if row["runtime"] == fastest["runtime"] and row["params"]), key=lambda row: row["params"])
        floors.append({"workload": goal["workload"], "runtime": fastest["runtime"], "smallest": smallest["name"],
                       "smallest_params": smallest["params"], "smallest_p50_ms": smallest["latency_ms_p50"],
                       "baseline_params": tf["params"], "fastest": fastest["name"], "fastest_p50_ms": fastest["latency_ms_p50"],
                       "params_fell": tf["params"] / smallest["params"], "p50_fell": fastest["latency_ms_p50"] / smallest["latency_ms_p50"]})
    return floors


def size_limits(rows: list[dict], goal_rows: list[dict]) -> list[dict]:
    """Where the size goal is missed: the ModelPress artifact that gets under 1/SIZE_GOAL of TF FP32 with the least
    accuracy drop, i.e. how far the size goal is from the accuracy gate."""
    limits = []
    for goal in goal_rows:
        if goal["met"] is not False or "size" not in goal["goal"]:
            continue
        small = [row for row in rows if row["workload"] == goal["workload"] and row["kind"] == "modelpress"
                 and row["size_ratio_tf"] <= 1 / SIZE_GOAL]
        best = min(small, key=lambda row: row["drop_pp"], default=None)
        limits.append({"workload": goal["workload"], "artifact": best["name"] if best else None,
                       "size_ratio_tf": best["size_ratio_tf"] if best else None, "drop_pp": best["drop_pp"] if best else None})
    return limits


def workload_table(rows: list[dict], workload: str) -> str:
    mine = [{**row, "spread": spread_ms(row)} for row in rows if row["workload"] == workload]
    return text_table(mine, COLUMNS, title=f"== {workload} ==")


def goals_table(goal_rows: list[dict]) -> str:
    shown = [{**g, "artifact": g["artifact"] or "-", "met": {True: "yes", False: "NO", None: "-"}[g["met"]]} for g in goal_rows]
    return text_table(shown, [("workload", "workload", None), ("goal", "goal", None), ("best artifact", "artifact", None),
                              ("reached", "reached", None), ("met", "met", None)], title="== goals ==")


def limits_text(profiles: list[dict], floors: list[dict], sizes: list[dict], top: int = 5) -> str:
    lines = ["== what limits the missed goals (measured) =="]
    for size in sizes:
        if size["artifact"] is None:
            lines.append(f"{size['workload']} size: no ModelPress artifact gets under 1/{SIZE_GOAL:.0f} of TF FP32 at any accuracy")
        else:
            lines.append(f"{size['workload']} size: the ModelPress artifact under 1/{SIZE_GOAL:.0f} with the least drop "
                         f"({size['artifact']}, 1/{1 / size['size_ratio_tf']:.1f}) loses {size['drop_pp']:.2f} pp, above the 1.0 pp gate")
    for floor in floors:
        lines.append(
            f"{floor['workload']} {floor['runtime']}: the model with the fewest parameters there ({floor['smallest']}, "
            f"{floor['smallest_params']:,} params, {floor['params_fell']:.0f}x fewer than the baseline) runs at p50 "
            f"{floor['smallest_p50_ms']:.4f} ms; the fastest blessed ModelPress artifact ({floor['fastest']}) at "
            f"{floor['fastest_p50_ms']:.4f} ms, only {floor['p50_fell']:.2f}x above it"
        )
    if profiles:
        lines.append("OpenVINO per-layer counters (median per call):")
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
        for axis, key, label in ((line[0], "latency_ms_p50", "batch-1 latency p50 (ms, log)"), (line[1], "size_gzip_bytes", "size gzip (bytes, log)")):
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
    fig.suptitle("blue: peers, orange: ModelPress; o blessed (<= 1.0 pp drop), x not; grey: Pareto front")
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


def report(rows: list[dict], failures: list[str], out: Path, extras: dict, data_specs: dict[str, dict], profile_limits: bool = True) -> str:
    """Ratios, goals, limits; write reference.json, reference.png and reference.html; return the printed text."""
    add_ratios(rows)
    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    goal_rows = [g for workload in workloads for g in goals(rows, workload)]
    profiles = limits(rows, goal_rows, data_specs) if profile_limits else []
    floors, sizes = runtime_floors(rows, goal_rows), size_limits(rows, goal_rows)
    sections = [workload_table(rows, workload) for workload in workloads]
    sections += [goals_table(goal_rows)]
    if profiles or floors or sizes:
        sections.append(limits_text(profiles, floors, sizes))
    if failures:
        sections.append("\n".join(["== recipes that did not run ==", *failures]))
    payload = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **extras,
               "rows": rows, "goals": goal_rows, "floors": floors, "size_limits": sizes, "profiles": profiles,
               "failures": failures}
    text = "\n\n".join(sections)
    png = pareto_png(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "reference.json", payload)
    (out / "reference.png").write_bytes(png)
    (out / "reference.html").write_text(html_page(payload, text, png))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments("python -m bench.reference", __doc__.splitlines()[0], "workloads", list(WORKLOADS))
    args = parser.parse_args(argv)
    started = time.monotonic()
    bench = Bench(WORK / "reference", repeats=1 if args.quick else args.repeats)
    rows, failures = [], []
    for workload in args.workloads:
        workload_rows, workload_failures = run_workload(bench, workload, args.quick)
        rows += workload_rows
        failures += workload_failures
    data_specs = {w: (quick_spec if args.quick else copy.deepcopy)(workflow(w, "x", [], []))["data"] for w in args.workloads}
    extras = {"seconds": round(time.monotonic() - started, 1), "step_seconds": {k: round(v, 1) for k, v in bench.seconds.items()},
              "quick": args.quick, "repeats": bench.repeats, "students": {w: STUDENTS[w] for w in args.workloads}}
    text = report(rows, failures, args.out, extras, data_specs)
    print(text)
    seconds = time.monotonic() - started
    print(f"\n{len(rows)} artifacts measured in {seconds:.0f}s ({seconds / 60:.1f} min); "
          f"written to {args.out}/reference.json, reference.png, reference.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
