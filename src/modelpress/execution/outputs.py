"""What an orchestrator's UI shows about a task that ran: scalar metrics, and the metadata of its output artifact
(what it is, its content digest, how it scored, and its lineage: the data digest, the parent artifact, the release).

Read from the files the step wrote (artifact.json, blessing.json) and from its result, so every orchestrator shows
what the step recorded."""

from __future__ import annotations

from typing import Any

from modelpress.io.artifacts import read_blessing, stored_digest
from modelpress.steps.catalog import get_step

# Blessing metrics shown with a validation's output (the comparison the UI makes at a glance).
SHOWN_METRICS = ("accuracy", "size_bytes", "latency_ms_p50")


def scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def task_outputs(step_name: str, output: str, result: dict) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, output metadata) of a task that ran (not skipped) and wrote `output`."""
    metrics = {key: value for key, value in (result.get("metrics") or {}).items() if scalar(value)}
    kind = get_step(step_name).output
    if kind == "model":
        digest, meta = stored_digest(output)
        metadata = {"format": meta.format, "digest": digest, "data_hash": meta.data_hash, "parent": meta.parent}
        metadata |= {key: meta.metrics[key] for key in ("accuracy", "size_bytes") if key in meta.metrics}
    elif kind == "validation":
        blessing = read_blessing(output)[0]
        metadata = {
            "name": blessing.name, "format": blessing.format, "digest": blessing.artifact_digest, "blessed": blessing.blessed,
            "data_hash": blessing.artifact_data_hash or blessing.data_hash, "parent": blessing.artifact,
        }  # fmt: skip
        metadata |= {key: blessing.metrics[key] for key in SHOWN_METRICS if key in blessing.metrics}
        if "search" in result:  # a search's selection: the verdict and the table beside the artifact it picked
            shown = ("rung", "artifact", "format", "blessed", "accuracy", "size_ratio", "latency_ms_p50", "met", "skipped")
            rows = [{key: row.get(key) for key in shown} for row in result["search"]["rows"]]
            metadata["search"] = {"verdict": result["search"]["verdict"], "rows": rows}
    elif "version" in result:  # a release published (push) or deployed (deploy)
        metrics |= {"version": result["version"]}
        if "published" in result:
            metrics |= {"artifacts": len(result["published"]), "rejected": len(result["rejected"])}
        release = {"model": result["model"], "version": result["version"], "registry": result.get("registry"), "uri": result.get("version_uri")}
        metadata = {"release": {key: value for key, value in release.items() if value is not None}, "digest": result.get("digest")}
    else:
        metadata = {}
    return metrics, {key: value for key, value in metadata.items() if value is not None}
