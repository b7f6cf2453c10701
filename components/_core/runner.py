"""`modelpress run`: execute a workflow's plan locally, step after step, then write the report.

Run folder layout: artifacts/<name>/ (model artifacts), validation/<name>/ (blessings), and any other step's output
under its kind (release/, serving/), plus summary.json, report.md, report.html, report.png.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import storage
from .data import load_dataset
from .driver import run_task
from .plan import Task, build_plan
from .progress import log
from .spec import Workflow

KIND_FOLDERS = {"model": "artifacts", "validation": "validation"}


def output_uri(run: str, task: Task) -> str:
    kind = task.output_kind
    return storage.join(run, KIND_FOLDERS.get(kind, kind), task.artifact or task.id)


def preflight(workflow: Workflow, out: str, overwrite: bool) -> list[Task]:
    """Everything that can be checked before training: plan, output, data, model-vs-data shape."""
    storage.configure(workflow.storage)
    plan = build_plan(workflow)
    storage.check_output(out, overwrite)
    data = load_dataset(workflow.data)
    from .models import build_model

    build_model(workflow.model, data.input_shape, data.num_classes)
    return plan


def run_workflow(workflow: Workflow, out: str, overwrite: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    plan = preflight(workflow, out, overwrite)
    if overwrite and storage.exists(out):
        storage.remove(out)
    uris: dict[str, str] = {}  # every task's output, a skipped one's holding its skip marker
    results: dict[str, dict] = {}
    skipped: list[dict] = []
    for number, task in enumerate(plan, start=1):
        inputs = {name: uris[source] if isinstance(source, str) else [uris[s] for s in source] for name, source in task.inputs.items()}
        uris[task.id] = output_uri(out, task)
        log(f"step {number}/{len(plan)}: {task.id}")
        result = run_task(task.step, task.config, inputs, uris[task.id])
        if result.get("skipped"):
            log(f"{task.id} skipped: {result['reason']}")
            skipped.append({"name": task.artifact or task.id, "task": task.id, "reason": result["reason"]})
        else:
            results[task.id] = result
    return finish_run(workflow, out, plan, uris, results, skipped, time.monotonic() - started)


def finish_run(workflow, out, plan, uris, results, skipped, seconds) -> dict[str, Any]:
    from .report import artifact_rows, text_table, write_report

    blessings, artifact_uris, formats = [], {}, {}
    for task in plan:
        if task.step == "validate" and task.id in results:
            blessing = json.loads(storage.read_bytes(storage.join(uris[task.id], "blessing.json")))
            blessing["validation_uri"] = uris[task.id]
            blessings.append(blessing)
            artifact_uris[task.artifact] = uris[task.inputs["model"]]
            formats[task.artifact] = blessing["format"]
    rows = artifact_rows(blessings, artifact_uris, formats)
    extras = {"seconds": round(seconds, 1), "steps": {tid: _brief(r) for tid, r in results.items()}}
    summary = write_report(out, workflow, rows, skipped, extras)
    print(text_table(rows), flush=True)
    for entry in skipped:
        print(f"  skipped {entry['name']}: {entry['reason']}")
    print(f"\nrun written to {out} ({seconds:.0f}s): summary.json, report.md, report.html", flush=True)
    return summary


def _brief(result: dict) -> dict:
    """What a step returned, minus bulky fields, for summary.json."""
    return {k: v for k, v in result.items() if k not in ("metrics",)} | (
        {"metrics": {k: v for k, v in result["metrics"].items() if not isinstance(v, list)}} if "metrics" in result else {}
    )

