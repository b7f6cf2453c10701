"""Per-layer time of an OpenVINO artifact from OpenVINO's own performance counters, measured in this process alone.

    python -m bench.profile MODEL_XML --data '{"source": "digits"}' [--threads 1] [--runs 100]

Prints JSON: the median time of every executed layer over the runs, their sum, and the wall time per call measured
around the same calls, so the share of a call that is not layer compute (runtime overhead) shows too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def profile_openvino(model_xml: str, rows: np.ndarray, threads: int, runs: int, warmup: int = 10) -> dict:
    from modelpress.ml.runtimes import OpenVINORunner

    # The validate step's OpenVINO runner (its latency setup, batch-1 static shape), with the per-layer counters on.
    runner = OpenVINORunner(Path(model_xml), threads, layer_counters=True)
    request = runner.request((1, *rows.shape[1:]))
    for i in range(warmup):
        runner.predict(rows[i % len(rows)][None])
    layer_us: dict[tuple[str, str, str], list[float]] = {}
    walls = []
    for i in range(runs):
        started = time.perf_counter()
        runner.predict(rows[i % len(rows)][None])
        walls.append((time.perf_counter() - started) * 1e6)
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                key = (info.node_name, info.node_type, info.exec_type)
                layer_us.setdefault(key, []).append(info.real_time.total_seconds() * 1e6)
    # Medians, like the latency p50: a call the shared machine preempted must not make a layer look slow.
    layers = sorted(
        ({"layer": name, "type": kind, "exec_type": exec_type, "us": round(float(np.median(times)), 2)} for (name, kind, exec_type), times in layer_us.items()),
        key=lambda layer: -layer["us"],
    )
    return {"layers": layers, "layer_us_total": round(sum(layer["us"] for layer in layers), 2),
            "wall_us_p50": round(float(np.percentile(walls, 50)), 2), "runs": runs, "threads": threads}


def main(argv: list[str] | None = None) -> int:
    from modelpress.contract.workflow import Workflow
    from modelpress.io.data import load_dataset

    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("model_xml")
    parser.add_argument("--data", required=True, help="the workflow's data section as JSON (the test rows fed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args(argv)
    data_spec = Workflow.model_validate({"name": "profile", "model": {"zoo": "mlp"}, "data": json.loads(args.data)}).data
    rows = np.asarray(load_dataset(data_spec).head("test", 256)[0], dtype=np.float32)
    print(json.dumps(profile_openvino(args.model_xml, rows, args.threads, args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
