"""`modelpress run`: execute a workflow's plan locally, step after step, then write the report.

Run folder layout: artifacts/<name>/ (model artifacts), validation/<name>/ (blessings), and any other step's output
under its kind (release/, serving/), plus summary.json, report.md, report.html, report.png. The orchestrators write
the same report with `report_validations` (their `report` task).
"""

from __future__ import annotations

import importlib.util
import json
import time
import traceback
import uuid
from typing import Any

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.contract.formats import FORMATS
from modelpress.contract.images import EXTRA_MODULES, Placement
from modelpress.contract.workflow import Workflow
from modelpress.execution.driver import SKIP_MARKER, run_task, skip, was_skipped
from modelpress.execution.plan import Task, build_plan
from modelpress.io import storage
from modelpress.io.artifacts import read_blessing
from modelpress.io.data import load_dataset
from modelpress.io.search import SEARCH_FILE

KIND_FOLDERS = {"model": "artifacts", "validation": "validation"}
REPORT_PLACEMENT = Placement("tf", False)  # the orchestrators' report task: its plots need matplotlib, which tf carries


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


def validation_rows(validations: list[str], artifact_uris: dict[str, str] | None = None) -> list[dict]:
    """The report's rows: one per validation's blessing (its artifact's URI from `artifact_uris` by name, else the
    blessing's)."""
    from modelpress.io.report import artifact_rows

    blessings = [read_blessing(uri)[0].model_dump() | {"validation_uri": uri} for uri in validations]
    return artifact_rows(blessings, artifact_uris or {}, {})


def finish_run(workflow, out, plan, uris, results, skipped, failed, seconds) -> dict[str, Any]:
    from modelpress.io.report import search_lines, text_table, write_report

    validations = [t for t in plan if t.step == "validate" and t.id in results]
    rows = validation_rows([uris[t.id] for t in validations], {t.artifact: uris[t.inputs["model"]] for t in validations})
    extras = {"seconds": round(seconds, 1), "steps": {tid: _brief(r) for tid, r in results.items()}, "failed": failed}
    search = next((r["search"] for r in results.values() if "search" in r), None)  # the select task's table
    if search is not None:
        extras["search"] = search
    summary = write_report(out, workflow.name, workflow.gates.model_dump(exclude_none=True), rows, skipped, extras)
    print(text_table(rows), flush=True)
    if search is not None:
        print("\n" + "\n".join(search_lines(search)), flush=True)
    for entry in skipped:
        print(f"  skipped {entry['name']}: {entry['reason']}")
    for entry in failed:
        print(f"  FAILED {entry['task']}: {entry['reason']}")
    print(f"\nrun written to {out} ({seconds:.0f}s): summary.json, report.md, report.html", flush=True)
    return summary


def report_validations(name: str, validations: list[str], out: str) -> dict[str, Any]:
    """The run report of an orchestrator's run (`modelpress report`): the files `modelpress run` writes, from the
    run's validations (a skipped one, e.g. a target without its hardware, is listed as skipped)."""
    from modelpress.io.report import write_report

    ran = [uri for uri in validations if not was_skipped(uri)]
    markers = {uri: json.loads(storage.read_bytes(storage.join(uri, SKIP_MARKER))) for uri in validations if uri not in ran}
    skipped = [
        {"name": marker.get("artifact") or uri.rstrip("/").rsplit("/", 1)[-1], "task": "validate", "reason": marker["reason"]}
        for uri, marker in markers.items()
    ]
    # A search's selection is a validation too, of an artifact that has its own row: it brings the search table instead
    searches = {uri: json.loads(storage.read_bytes(storage.join(uri, SEARCH_FILE))) for uri in ran if storage.exists(storage.join(uri, SEARCH_FILE))}
    ran = [uri for uri in ran if uri not in searches]
    gates = {key: value for uri in ran for key, value in read_blessing(uri)[0].thresholds.items()}  # as the run set them
    extras = {"search": next(iter(searches.values()))} if searches else {}
    return write_report(out, name, gates, validation_rows(ran), skipped, extras)


def _brief(result: dict) -> dict:
    """What a step returned, minus bulky fields, for summary.json."""
    return {k: v for k, v in result.items() if k not in ("metrics", "search")} | (
        {"metrics": {k: v for k, v in result["metrics"].items() if not isinstance(v, list)}} if "metrics" in result else {}
    )

