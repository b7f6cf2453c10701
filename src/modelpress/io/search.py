"""The search's bookkeeping, shared by its two steps (`search` decides whether a rung of the ladder still runs,
`select` picks what push and deploy publish): a table of every artifact the ladder made, each measured against the
target, the artifact that meets it from the cheapest rung, or the closest one and why it falls short.

Read from the validations' blessings only: the gates are the accuracy budget (an artifact counts only when blessed),
the trained model's validation is rung 0 and the reference of every ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelpress.contract.search import LIMITS, TRAINED, SearchSpec, SearchTarget, rung_of
from modelpress.io.artifacts import Blessing, read_blessing

SEARCH_FILE = "search.json"


def measures(metrics: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """What a target limits, of an artifact measured by validate: its size and speed also relative to the trained
    model's SavedModel."""
    size, latency = metrics.get("size_gzip_bytes"), metrics.get("latency_ms_p50")
    return {
        "size_gzip_bytes": size,
        "size_ratio": size / baseline["size_gzip_bytes"] if size is not None else None,
        "latency_ms_p50": latency,
        "speedup": baseline["latency_ms_p50"] / latency if latency else None,
    }


def target_checks(target: SearchTarget, measured: dict[str, float | None]) -> list[dict[str, Any]]:
    """One check per limit the target sets, shaped like validate's gate checks (gate, threshold, value, passed,
    reason), plus `miss`: how far it falls short, as a share of the limit (0 when it passes)."""
    checks = []
    for key, limit in target.limits().items():
        measure, at_most = LIMITS[key]
        value = measured[measure]
        passed = value is not None and (value <= limit if at_most else value >= limit)
        miss = 0.0 if passed or value is None else (value / limit - 1 if at_most else limit / value - 1)
        checks.append(
            {"gate": f"target.{key}", "threshold": limit, "value": value, "passed": passed, "miss": miss,
             "reason": None if passed else shortfall(key, value, limit, miss)}
        )  # fmt: skip
    return checks


def shortfall(key: str, value: float | None, limit: float, miss: float) -> str:
    if value is None:
        return f"not measured, so {key} cannot be checked"
    return {
        "max_size_ratio": f"gzip size {value:.3f} of the trained SavedModel's, above max_size_ratio {limit:g} ({miss:.0%} over)",
        "max_gzip_bytes": f"gzip size {value:,.0f} bytes, above max_gzip_bytes {limit:,} ({miss:.0%} over)",
        "max_latency_ms": f"batch-1 p50 {value:.3g} ms, above max_latency_ms {limit:g} ({miss:.0%} over)",
        "min_speedup": f"batch-1 p50 {value:.2f}x as fast as the trained SavedModel, below min_speedup {limit:g} ({miss:.0%} short)",
    }[key]


@dataclass
class Outcome:
    """The search so far: one row per artifact (and per rung that made none), the selected row (meets the target),
    else the closest, and one line saying which and why."""

    rows: list[dict[str, Any]]
    selected: dict[str, Any] | None
    closest: dict[str, Any] | None
    verdict: str
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> dict[str, Any]:
        """The row that stands for the search: the selected one, else the closest, else (no artifact of the target's
        format was made) the trained model's."""
        return self.selected or self.closest or self.rows[0]

    def as_json(self) -> dict[str, Any]:
        chosen = self.selected or self.closest
        return {
            "target": self.target, "verdict": self.verdict, "met": self.selected is not None,
            "selected": chosen["artifact"] if chosen else None, "rows": self.rows,
        }  # fmt: skip


def artifact_row(spec: SearchSpec, blessing: Blessing, uri: str, baseline: Blessing) -> dict[str, Any]:
    measured = measures(blessing.metrics, baseline.metrics)
    checks = target_checks(spec.target, measured)
    counted = spec.target.format is None or blessing.format == spec.target.format
    return {
        "rung": rung_of(blessing.name), "artifact": blessing.name, "format": blessing.format, "blessed": blessing.blessed,
        "accuracy": blessing.metrics.get("accuracy"), **measured, "counted": counted, "checks": checks,
        "met": counted and blessing.blessed and all(c["passed"] for c in checks),
        "reasons": blessing.reasons, "validation_uri": uri, "skipped": False, "note": None,
    }  # fmt: skip


def evaluate(spec: SearchSpec, validations: list[str], rungs: list[str]) -> Outcome | None:
    """The search over `rungs` (in ladder order, the trained model first) from the validations that ran; None when
    the trained model's validation is not among them (nothing can be measured against it)."""
    blessings = [(read_blessing(uri)[0], uri) for uri in validations]
    baseline = next((b for b, _ in blessings if b.name == TRAINED), None)
    if baseline is None:
        return None
    recipes = {rung.name: rung.recipe() for rung in spec.ladder} | {TRAINED: "as trained"}
    rows, met_in = [], None
    for rung in rungs:
        made = [artifact_row(spec, b, uri, baseline) for b, uri in blessings if rung_of(b.name) == rung]
        if not made:
            note = f"skipped: rung {met_in} already met the target" if met_in else "made no artifact: its tasks failed or skipped (see the run's log)"
            made = [{"rung": rung, "artifact": None, "counted": False, "met": False, "skipped": met_in is not None, "note": note}]
        for row in made:
            row["recipe"] = recipes[rung]
        rows += made
        if met_in is None and any(row["met"] for row in made):
            met_in = rung
    met = [row for row in rows if row["met"] and row["rung"] == met_in]
    # The most accurate of the cheapest rung's artifacts meeting the target, then the smallest, then the fastest:
    # no other of them is better on all three (a point of their Pareto front).
    selected = max(met, key=lambda r: (r["accuracy"], -r["size_gzip_bytes"], -r["latency_ms_p50"])) if met else None
    counted = [row for row in rows if row["counted"]]
    closest = None if selected or not counted else min(counted, key=lambda r: (not r["blessed"], max(c["miss"] for c in r["checks"])))
    target = spec.target.model_dump(exclude_none=True)
    return Outcome(rows, selected, closest, verdict(spec, selected, closest), target)


def describe(row: dict[str, Any]) -> str:
    """An artifact's measures in a few words."""
    parts = [f"gzip {row['size_gzip_bytes']:,} bytes ({row['size_ratio']:.3f} of the trained SavedModel's)"]
    if row["latency_ms_p50"] is not None:
        parts.append(f"batch-1 p50 {row['latency_ms_p50']:.3g} ms ({row['speedup']:.2f}x)")
    return ", ".join([*parts, f"accuracy {row['accuracy']:.4f}"])


def verdict(spec: SearchSpec, selected: dict | None, closest: dict | None) -> str:
    if selected is not None:
        return f"{selected['artifact']} (rung {selected['rung']}: {selected['recipe']}) meets the target: {describe(selected)}"
    if closest is None:
        made = f"no artifact of format {spec.target.format}" if spec.target.format else "no artifact"
        return f"no recipe met the target: {made} was validated"
    why = [*(f"not blessed: {reason}" for reason in closest["reasons"]), *(c["reason"] for c in closest["checks"] if not c["passed"])]
    return f"no recipe met the target; closest: {closest['artifact']} (rung {closest['rung']}: {closest['recipe']}): {'; '.join(why)}"


SEARCH_COLUMNS = ("rung", "recipe", "artifact", "format", "blessed", "accuracy", "gzip bytes", "size ratio", "p50 ms", "speed-up", "met target")


def search_cells(search: dict[str, Any]) -> list[list[str]]:
    """The search table's cells, one row per artifact (SEARCH_COLUMNS), and one per rung that made none, saying why."""
    body = []
    for row in search["rows"]:
        if row["artifact"] is None:
            body.append([row["rung"], row["recipe"], *["-"] * 8, row["note"]])
            continue
        met = "yes" if row["met"] else ("no" if row["counted"] else "not counted (format)")
        latency = "-" if row["latency_ms_p50"] is None else f"{row['latency_ms_p50']:.3g}"
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        body.append([
            row["rung"], row["recipe"], row["artifact"], row["format"], "yes" if row["blessed"] else "NO", f"{row['accuracy']:.4f}",
            f"{row['size_gzip_bytes']:,}", f"{row['size_ratio']:.3f}", latency, speedup, met,
        ])  # fmt: skip
    return body
