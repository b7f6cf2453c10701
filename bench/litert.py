"""LiteRT quantizer recipes (tflite_litert, ai-edge-quantizer) against the TFLite converter's PTQ on the bench workloads.

Per workload: the reference bench's trained model and its converter targets (tflite_fp32, tflite_dynamic, tflite_int8
with the reference bench's 300 calibration rows) run through the real plan; every recipe in RECIPES is converted from
that same trained model by the convert step (same calibration rows) and every artifact is measured like the other
benches: the validate step in fresh processes, `--repeats` times, one CPU thread.

The recipes are converted by the convert step directly, not through a workflow's `targets:`, because the workflow
spec does not list tflite_litert yet (spec.TARGET_FORMATS; see src/modelpress/steps/quantize/README.md).
"""

from __future__ import annotations

import time

from modelpress.common.progress import log
from modelpress.contract.workflow import parse_workflow
from modelpress.execution.plan import Task, step_config
from modelpress.steps.convert import step as convert
from modelpress.steps.convert.config import ConvertConfig

from .harness import WORK, Bench, Measured, bench_arguments, machine, spread_ms, text_table, write_json
from .recipes import INT8_CALIBRATION, WORKLOADS, workflow
from .reference import quick_spec

CONVERTER_TARGETS = {"tflite_fp32": "converter fp32", "tflite_dynamic": "converter dynamic-range PTQ",
                     "tflite_int8": "converter int8 PTQ"}
# Row name -> the tflite_litert recipe. Dense kernels hold most weights of both digits models: int4 goes there, the
# small logits layer (the most sensitive) keeps int8.
RECIPES = {
    "litert int8_weights": "int8_weights",
    "litert int8 (static)": "int8",
    "litert int16_activations": "int16_activations",
    "litert int4 dense, int8 rest": [{"weights": "int8"}, {"layers": "dense_", "weights": "int4"}],
    "litert int4_weights": "int4_weights",
}
COLUMNS = [("artifact", "name", None), ("accuracy", "accuracy", "acc"), ("drop pp", "drop_pp", "pp"),
           ("size", "size_bytes", "bytes"), ("gzip", "size_gzip_bytes", "bytes"), ("p50 ms", "latency_ms_p50", "ms"),
           ("p50 min-max", "spread", None), ("p95 ms", "latency_ms_p95", "ms"), ("blessed", "blessed", "yes")]


def run_workload(bench: Bench, workload: str, quick: bool) -> list[Measured]:
    spec = workflow(workload, f"bench-litert-{workload.replace('_', '-')}", [],
                    ["saved_model", "tflite_fp32", "tflite_dynamic", {"format": "tflite_int8", "options": INT8_CALIBRATION}])
    spec = quick_spec(spec) if quick else spec
    rows = bench.run_spec(spec, workload, "converter", {"train": "tf fp32 savedmodel", **CONVERTER_TARGETS})
    trained = next(r for r in rows if r.name == "tf fp32 savedmodel")
    workflow_spec = parse_workflow(spec, source=f"bench spec {spec['name']}")
    for name, recipe in RECIPES.items():
        output = str(bench.work / workload / f"tflite_litert-{len(rows)}")  # one folder per recipe
        log(f"bench {workload}: {name}")
        started = time.monotonic()
        config = ConvertConfig(format="tflite_litert", data=spec["data"], recipe=recipe, **INT8_CALIBRATION)
        convert.run(config, {"model": trained.uri}, output)
        bench._timed("convert", started)
        validation = step_config("validate", workflow_spec, {"name": "tflite_litert"}, "validate")
        inputs = {"model": output, "parent": trained.validation_uri, "baseline": trained.validation_uri}
        uri, blessing = bench.validate(Task(f"validate_{name}", "validate", validation), inputs)
        rows.append(bench.measured(blessing, workload, name, "litert", output, uri))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = bench_arguments("python -m bench.litert", __doc__.splitlines()[0], "workloads", list(WORKLOADS)).parse_args(argv)
    started = time.monotonic()
    bench = Bench(WORK / "litert", repeats=1 if args.quick else args.repeats)
    rows = []
    for workload in args.workloads:
        rows += [dict(m.row(), spread=spread_ms(m.row())) for m in run_workload(bench, workload, args.quick)]
    seconds = time.monotonic() - started
    write_json(args.out / "litert.json", {"rows": rows, "seconds": round(seconds, 1), "quick": args.quick, "machine": machine()})
    for workload in args.workloads:
        print(text_table([r for r in rows if r["workload"] == workload], COLUMNS, title=f"{workload}:"))
        print()
    print(f"{len(rows)} rows in {seconds:.0f}s; written to {args.out / 'litert.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
