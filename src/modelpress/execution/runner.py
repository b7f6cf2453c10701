"""`modelpress run`: execute a workflow's plan locally, step after step, then write the report.

Run folder layout: artifacts/<name>/ (model artifacts), validation/<name>/ (blessings), and any other step's output
under its kind (release/, serving/), plus summary.json, report.md, report.html, report.png.
"""

from __future__ import annotations

import importlib.util
import time
import traceback
import uuid
from typing import Any

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.contract.formats import FORMATS
from modelpress.contract.images import EXTRA_MODULES
from modelpress.contract.workflow import Workflow
from modelpress.execution.driver import run_task, skip
from modelpress.execution.plan import Task, build_plan
from modelpress.io import storage
from modelpress.io.artifacts import read_blessing
from modelpress.io.data import load_dataset

KIND_FOLDERS = {"model": "artifacts", "validation": "validation"}


def output_uri(run: str, task: Task) -> str:
    kind = task.output_kind
    return storage.join(run, KIND_FOLDERS.get(kind, kind), task.artifact or task.id)


def preflight(workflow: Workflow, out: str, overwrite: bool) -> list[Task]:
    """Everything that can fail late, checked before training: plan, output, data, model-vs-data shape, that the
    push registry and the serving path accept a write, and that each target's runtime is installed."""
    storage.configure(workflow.storage)
    plan = build_plan(workflow)
    storage.check_output(out, overwrite)
    for key, uri in (("push.uri", workflow.push and workflow.push.uri), ("serving.base_path", workflow.serving and workflow.serving.base_path)):
        if uri:
            check_writable(key, uri)
    check_runtimes(plan)
    data = load_dataset(workflow.data)
    from modelpress.ml.models import build_model

    build_model(workflow.model, data.input_shape, data.num_classes)
    return plan


def check_writable(key: str, uri: str) -> None:
    """Write and remove a probe object: a missing bucket or a refused write shows now, not after training."""
    probe = storage.join(uri, f".modelpress-preflight-{uuid.uuid4().hex}")
    try:
        storage.write_bytes(probe, b"")
        storage.remove(probe)
    except UserError as exc:
        raise UserError(f"{key} {uri} does not accept a write: {exc}", tuple(key.split("."))) from None
    except OSError as exc:
        raise UserError(f"{key} {uri} does not accept a write ({exc.strerror or exc}); fix the path or its permissions") from None


def check_runtimes(plan: list[Task]) -> None:
    """Each target whose conversion must not be skipped has its runtime installed here."""
    for task in plan:
        if task.step != "convert" or task.config.on_unavailable == "skip":
            continue
        for extra in FORMATS[task.target].extras:
            missing = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m.partition(".")[0]) is None]
            if missing:
                raise UserError(
                    f"target {task.target} needs {missing[0]}, which is not installed here: pip install 'modelpress[{extra}]' "
                    "(or give the target on_unavailable: skip)",
                    ("targets",),
                )


def run_workflow(workflow: Workflow, out: str, overwrite: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    plan = preflight(workflow, out, overwrite)
    if overwrite and storage.exists(out):
        storage.remove(out)
    uris: dict[str, str] = {}  # every task's output, a skipped or failed one's holding its skip marker
    results: dict[str, dict] = {}
    skipped: list[dict] = []
    failed: list[dict] = []
    for number, task in enumerate(plan, start=1):
        inputs = {name: uris[source] if isinstance(source, str) else [uris[s] for s in source] for name, source in task.inputs.items()}
        uris[task.id] = output_uri(out, task)
        log(f"step {number}/{len(plan)}: {task.id}")
        try:
            result = run_task(task.step, task.config, inputs, uris[task.id])
        except Exception as exc:  # noqa: BLE001 (a failing task fails its own chain; the run still reports)
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, UserError):
                log(traceback.format_exc().rstrip())
            log(f"{task.id} FAILED: {reason}")
            failed.append({"name": task.artifact or task.id, "task": task.id, "reason": reason})
            skip(uris[task.id], f"{task.id} failed", overwrite=True)  # what reads it skips
            continue
        if result.get("skipped"):
            log(f"{task.id} skipped: {result['reason']}")
            skipped.append({"name": task.artifact or task.id, "task": task.id, "reason": result["reason"]})
        else:
            results[task.id] = result
    return finish_run(workflow, out, plan, uris, results, skipped, failed, time.monotonic() - started)


def finish_run(workflow, out, plan, uris, results, skipped, failed, seconds) -> dict[str, Any]:
    from modelpress.io.report import artifact_rows, text_table, write_report

    blessings, artifact_uris, formats = [], {}, {}
    for task in plan:
        if task.step == "validate" and task.id in results:
            blessing = read_blessing(uris[task.id])[0].model_dump()
            blessing["validation_uri"] = uris[task.id]
            blessings.append(blessing)
            artifact_uris[task.artifact] = uris[task.inputs["model"]]
            formats[task.artifact] = blessing["format"]
    rows = artifact_rows(blessings, artifact_uris, formats)
    extras = {"seconds": round(seconds, 1), "steps": {tid: _brief(r) for tid, r in results.items()}, "failed": failed}
    summary = write_report(out, workflow, rows, skipped, extras)
    print(text_table(rows), flush=True)
    for entry in skipped:
        print(f"  skipped {entry['name']}: {entry['reason']}")
    for entry in failed:
        print(f"  FAILED {entry['task']}: {entry['reason']}")
    print(f"\nrun written to {out} ({seconds:.0f}s): summary.json, report.md, report.html", flush=True)
    return summary


def _brief(result: dict) -> dict:
    """What a step returned, minus bulky fields, for summary.json."""
    return {k: v for k, v in result.items() if k not in ("metrics",)} | (
        {"metrics": {k: v for k, v in result["metrics"].items() if not isinstance(v, list)}} if "metrics" in result else {}
    )

