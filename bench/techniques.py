"""`make bench-techniques`: every compression technique on the digits CNN and the 300-150 MLP, side by side.

Each technique is a workflow spec (train -> the technique -> one TFLite target) run through the plan; every row is
measured by the validate step in its own process, all in LiteRT (the .tflite runtime), so the rows differ only by the
technique. Prints one table and the targets of issue 3, writes bench/results/techniques.json.

    python -m bench.techniques [--quick] [--repeats N] [--out DIR]
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

from modelpress.common.progress import log
from modelpress.steps.catalog import STEPS

from .harness import WORK, Bench, Measured, bench_arguments, machine, spread_ms, text_table, write_json

DATA = {"source": "digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}}
# The two models of issue 3: the CNN as in examples/digits_cnn.yaml, the zoo's 300-150 MLP as in digits_mlp.yaml.
MODELS = {
    "cnn": {"model": {"zoo": "small_cnn", "params": {"filters": [16, 32], "dense": 64}},
            "train": {"epochs": 25, "batch_size": 32, "learning_rate": 0.002, "seed": 0}},
    "mlp": {"model": {"zoo": "mlp"}, "train": {"epochs": 30, "batch_size": 32, "learning_rate": 0.001, "seed": 0}},
}
EVALUATION = {"latency_runs": 200, "warmup_runs": 20, "threads": 1}
ROW_FIELDS = ("technique", "model", "format", "accuracy", "drop_pp", "params", "size_gzip_bytes", "latency_ms_p50",
              "latency_ms_p95", "latency_ms_p50_min", "latency_ms_p50_max", "repeats", "threads")


@dataclass(frozen=True)
class Technique:
    name: str
    compress: list[dict]
    target: str = "tflite_fp32"  # every row runs in LiteRT; QAT's own target is INT8
    model: dict | None = None  # a different architecture than the workload's (the student trained from scratch)
    tune: dict | None = None  # the workflow's tune: section (a hyperparameter search before train)

    @property
    def steps(self) -> set[str]:
        return {entry["technique"] for entry in self.compress} | ({"tune"} if self.tune else set())


def techniques(model: str) -> list[Technique]:
    """The techniques for one of MODELS; the structural and distillation rows need the model's own shapes."""
    student = {"cnn": {"zoo": "small_cnn", "params": {"filters": [4, 8], "dense": 16}},
               "mlp": {"zoo": "mlp", "params": {"hidden": [32, 16]}}}[model]
    return [
        Technique("baseline", []),
        Technique("prune 50% (magnitude)", [{"technique": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": 10}]),
        Technique("prune 50% (lottery, 2 rounds)", [{"technique": "prune", "method": "lottery", "sparsity": 0.5, "rounds": 2, "epochs": 10}]),
        Technique("prune structural 50%", [{"technique": "prune", "method": "structured", "ratio": 0.5, "epochs": 10}]),
        Technique("cluster 32", [{"technique": "cluster", "clusters": 32, "epochs": 3}]),
        Technique("QAT INT8", [{"technique": "quantize", "mode": "qat", "epochs": 3}], target="tflite_int8"),
        Technique("distilled student", [{"technique": "distill", "student": student}]),
        Technique("student from scratch", [], model=student),
        Technique("tuned learning rate (random, 6 trials)", [], tune={
            "algorithm": "random", "max_trials": 6, "epochs": 8,
            "space": {"learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"}}}),
    ]


def spec_for(model: str, technique: Technique, quick: bool) -> dict:
    base = copy.deepcopy(MODELS[model])
    if technique.model is not None:
        base["model"] = technique.model
    compress = copy.deepcopy(technique.compress)
    tune = copy.deepcopy(technique.tune)
    evaluation = dict(EVALUATION)
    if quick:  # a smoke run: every path once, numbers meaningless
        base["train"]["epochs"] = 2
        for entry in compress:
            entry.update({key: 1 for key in ("epochs", "rounds") if key in entry})
        if tune:
            tune.update(max_trials=2, epochs=1)
        evaluation.update(latency_runs=20, warmup_runs=2)
    return {"name": f"bench-{model}", **base, "data": DATA, "compress": compress, "targets": [technique.target],
            "gates": {"max_drop": 0.01}, "evaluation": evaluation, **({"tune": tune} if tune else {})}


def technique_row(measured: Measured, teacher_accuracy: float) -> dict:
    """A table row; its drop counts from the workload's trained model (the teacher, also for the scratch student)."""
    drop_pp = round((teacher_accuracy - measured.accuracy) * 100, 4)
    return {"technique": measured.name, "model": measured.workload, **measured.row(ROW_FIELDS[2:]), "drop_pp": drop_pp}


COLUMNS = [("technique", "technique", None), ("model", "model", None), ("format", "format", None),
           ("accuracy", "accuracy", "acc"), ("drop pp", "drop_pp", "pp"), ("params", "params", "int"),
           ("size gzip", "size_gzip_bytes", "bytes"), ("p50 ms", "latency_ms_p50", "ms"), ("p50 min-max", "spread", None),
           ("p95 ms", "latency_ms_p95", "ms")]


def table(rows: list[dict]) -> str:
    return text_table([{**row, "spread": spread_ms(row)} for row in rows], COLUMNS)


def find(rows: list[dict], technique: str, model: str = "cnn") -> dict | None:
    return next((r for r in rows if r["technique"] == technique and r["model"] == model), None)


def targets(rows: list[dict]) -> list[dict]:
    """Issue 3's targets on the CNN: the value reached and whether it meets the target (None: not measured)."""

    def drop_target(technique: str, limit: float) -> dict:
        row = find(rows, technique)
        value = row["drop_pp"] if row else None
        return {"target": f"{technique}: drop <= {limit} pp", "reached": None if value is None else f"{value:+.2f} pp",
                "met": None if value is None else value <= limit}

    out = [drop_target("prune 50% (magnitude)", 0.5), drop_target("cluster 32", 1.0), drop_target("QAT INT8", 0.5)]
    teacher, distilled, scratch = find(rows, "baseline"), find(rows, "distilled student"), find(rows, "student from scratch")
    recovery = {"target": "distilled student recovers >= 50% of the teacher-vs-scratch gap", "reached": None, "met": None}
    if teacher and distilled and scratch:
        gap = teacher["accuracy"] - scratch["accuracy"]
        if gap > 0:
            share = (distilled["accuracy"] - scratch["accuracy"]) / gap
            recovery.update(reached=f"{share:.0%} of a {gap * 100:.2f} pp gap", met=share >= 0.5)
        else:
            recovery.update(reached=f"no gap: the scratch student is {-gap * 100:.2f} pp at or above the teacher", met=False)
    out.append(recovery)
    structural, baseline = find(rows, "prune structural 50%"), teacher
    smaller = {"target": "structural pruning: fewer parameters and lower p50 latency than the baseline", "reached": None, "met": None}
    if structural and baseline:
        smaller.update(
            reached=f"{structural['params']:,} vs {baseline['params']:,} params, p50 {structural['latency_ms_p50']:.4f} vs "
            f"{baseline['latency_ms_p50']:.4f} ms",
            met=structural["params"] < baseline["params"] and structural["latency_ms_p50"] < baseline["latency_ms_p50"],
        )
    out.append(smaller)
    return out


def targets_text(entries: list[dict]) -> str:
    rows = [{**e, "reached": e["reached"] or "not measured", "met": {True: "yes", False: "NO", None: "-"}[e["met"]]} for e in entries]
    return text_table(rows, [("target", "target", None), ("reached", "reached", None), ("met", "met", None)], "targets (CNN)")


def write_results(rows: list[dict], missing: list[str], out: Path, extras: dict) -> dict:
    payload = {"rows": rows, "targets": targets(rows), "not_run": missing, "machine": machine(), **extras}
    write_json(out / "techniques.json", payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    args = bench_arguments("python -m bench.techniques", __doc__.splitlines()[0], "models", list(MODELS)).parse_args(argv)
    started = time.monotonic()
    bench = Bench(WORK / "techniques", repeats=1 if args.quick else args.repeats)
    rows, missing = [], []
    for model in args.models:
        teacher_accuracy = None  # the baseline row comes first: its spec's trained model is the workload's
        for technique in techniques(model):
            absent = sorted(technique.steps - set(STEPS))
            if absent:
                missing.append(f"{technique.name} on {model}: step {', '.join(absent)} is not in this ModelPress version")
                log(f"bench-techniques: {missing[-1]}")
                continue
            spec = spec_for(model, technique, args.quick)
            measured = bench.run_spec(spec, workload=model, kind="technique", names={technique.target: technique.name})
            teacher_accuracy = teacher_accuracy if teacher_accuracy is not None else measured[0].baseline_accuracy
            rows.extend(technique_row(m, teacher_accuracy) for m in measured)
    seconds = time.monotonic() - started
    payload = write_results(rows, missing, args.out, {"seconds": round(seconds, 1), "step_seconds": bench.seconds, "quick": args.quick})
    print(table(rows))
    print()
    print(targets_text(payload["targets"]))
    for line in missing:
        print(f"  not run: {line}")
    print(f"\n{len(rows)} rows in {seconds:.0f}s on {payload['machine']['cores']} cores "
          f"(load average {payload['machine']['load_average_1_5_15']}); written to {args.out / 'techniques.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
