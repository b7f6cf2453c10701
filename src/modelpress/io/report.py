"""The run report: `summary.json` for machines, `report.md` and `report.html` (table, plots, gates) for people.

summary.json fields are a contract read by other tools: artifacts[] with name, format, uri, blessed, reasons,
metrics{accuracy, size_bytes, size_gzip_bytes, latency_ms_p50, latency_ms_p95, ...}. Add fields; never rename.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from modelpress.io import storage
from modelpress.io.artifacts import LAYER_ERRORS_FILE, SENSITIVITY_FILE
from modelpress.io.search import SEARCH_COLUMNS, search_cells

SUMMARY_METRICS = (
    "accuracy",
    "drop",
    "agreement",
    "params",
    "size_bytes",
    "size_gzip_bytes",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_per_s",
    "threads",
)


def artifact_rows(blessings: list[dict], artifact_uris: dict[str, str], formats: dict[str, str]) -> list[dict]:
    rows = []
    for blessing in blessings:
        name = blessing["name"]
        rows.append(
            {
                "name": name,
                "format": formats.get(name, blessing.get("format")),
                "uri": artifact_uris.get(name, blessing.get("artifact")),
                "blessed": blessing["blessed"],
                "reasons": blessing["reasons"],
                "metrics": {k: blessing["metrics"].get(k) for k in SUMMARY_METRICS},
                "validation_uri": blessing.get("validation_uri"),
            }
        )
    return rows


def significant(value: float, digits: int) -> str:
    """`value` with `digits` significant digits, never in exponent form (0.0123, 1.23, 123, 1234)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{round(value, decimals):.{decimals}f}"


def measure(name: str, value: Any) -> str:
    """A gate's threshold or measured value, in the unit its name ends with (sizes in KiB/MiB, latency in ms);
    shares (accuracy, drop, agreement) to 4 decimals."""
    if name.endswith("_bytes"):
        return _fmt(value, "bytes")
    if name.endswith("_ms"):
        return f"{_fmt(value, 'ms')} ms" if value is not None else "-"
    return _fmt(value, "acc") if isinstance(value, float) else _fmt(value, "")


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "pp":
        return f"{value * 100:+.2f}"
    if kind == "bytes":
        return f"{value / 1024:,.1f} KiB" if value < 1 << 20 else f"{value / (1 << 20):,.2f} MiB"
    if kind == "ms":
        return significant(value, 3)
    if kind == "int":
        return f"{value:,}"
    if kind == "rate":
        return f"{value:,.0f}"
    return str(value)


COLUMNS = (
    ("artifact", "name", None),
    ("format", "format", None),
    ("accuracy", "accuracy", "acc"),
    ("drop pp", "drop", "pp"),
    ("agree", "agreement", "acc"),
    ("params", "params", "int"),
    ("size", "size_bytes", "bytes"),
    ("gzip", "size_gzip_bytes", "bytes"),
    ("p50 ms", "latency_ms_p50", "ms"),
    ("p95 ms", "latency_ms_p95", "ms"),
    ("ex/s", "throughput_per_s", "rate"),
    ("threads", "threads", "int"),
    ("blessed", "blessed", None),
)


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [title for title, _, _ in COLUMNS]
    body = []
    for row in rows:
        cells = []
        for _, key, kind in COLUMNS:
            if key in ("name", "format"):
                cells.append(str(row[key]))
            elif key == "blessed":
                cells.append("yes" if row["blessed"] else "NO")
            else:
                cells.append(_fmt(row["metrics"].get(key), kind))
        body.append(cells)
    return header, body


def text_table(rows: list[dict]) -> str:
    """A fixed-width table for the terminal, followed by the reasons of every rejected artifact."""
    header, body = table_cells(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # noqa: E731
    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    for row in rows:
        for reason in row["reasons"]:
            out.append(f"  {row['name']}: {reason}")
    return "\n".join(out)


def markdown_table(rows: list[dict]) -> str:
    header, body = table_cells(rows)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(out)


def label_points(axis, points: list[tuple[float, float, str]]) -> None:
    """Name each point; the names of points that nearly coincide (conversions that keep the parent's accuracy and
    size) are stacked downwards instead of printed over each other."""
    axis.autoscale_view()
    placed: list[tuple[float, float]] = []
    for x, y, name in sorted(points):
        px, py = axis.transData.transform((x, y))  # pixels: "near" means near on the plot, whatever the scale
        crowd = sum(1 for qx, qy in placed if abs(px - qx) < 70 and abs(py - qy) < 10)
        placed.append((px, py))
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4 - 10 * crowd), fontsize=8)


def plot_png(rows: list[dict]) -> bytes:
    """Accuracy against gzip size and against batch-1 latency, one point per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in (
        (axes[0], "size_gzip_bytes", "size, gzip (KiB, log)"),
        (axes[1], "latency_ms_p50", "batch-1 latency p50 (ms, log)"),
    ):
        points = []
        for row in rows:
            x, y = row["metrics"].get(key), row["metrics"].get("accuracy")
            if x is None or y is None:
                continue
            x = x / 1024 if key == "size_gzip_bytes" else x
            axis.scatter(x, y, marker="o" if row["blessed"] else "x", color="tab:green" if row["blessed"] else "tab:red", s=50)
            points.append((x, y, row["name"]))
        axis.set_xscale("log")
        label_points(axis, points)
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy")
        axis.grid(True, alpha=0.3)
    fig.suptitle("artifacts (green o: blessed, red x: rejected)")
    return figure_png(fig, dpi=110)


def figure_png(fig, dpi: int) -> bytes:
    """A finished matplotlib figure as PNG bytes; the figure is closed (pyplot keeps open ones alive)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


# Layers listed per rejected artifact in each per-layer section (worst first; the file beside the blessing has all).
WORST_LAYERS_SHOWN = 5


@dataclass
class LayerTable:
    """One rejected artifact's per-layer findings, as the reports show them: a line saying what was measured (or
    why nothing was), then its worst layers."""

    section: str  # the report section it belongs to
    artifact: str
    note: str
    header: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)  # cells; the first names the layer


def sensitivity_table(name: str, found: dict) -> LayerTable:
    """validate's sensitivity.json: accuracy each layer costs compressed alone."""
    if not found["computed"]:
        return LayerTable("Per-layer sensitivity", name, f"not measured: {found['reason']}")
    together, parent = found["together"], found["parent"]["name"]
    own = found.get("artifact_test_drop")
    itself = f" (the artifact itself: {_fmt(own, 'pp')} pp vs {parent} on test)" if own is not None else ""
    note = (
        f"{found['edit']}. On {found['rows']} {found['split']} rows, where {parent} scores "
        f"{found['reference_accuracy']:.4f}, all {together['layers']} layers at once cost {_fmt(together['drop'], 'pp')} pp"
        f"{itself}; the {found['layers_measured']} largest alone, worst first (all in {SENSITIVITY_FILE}):"
    )
    rows = [
        (layer["layer"], layer["type"], _fmt(layer["params"], "int"), _fmt(layer["drop"], "pp"), f"{layer['changed']:.1%}")
        for layer in found["layers"][:WORST_LAYERS_SHOWN]
    ]
    return LayerTable("Per-layer sensitivity", name, note, ("layer", "type", "params", "drop pp", "changed"), rows)


def layer_error_table(name: str, found: dict) -> LayerTable:
    """The tflite_litert quantizer's layer_errors.json: how far each tensor is from the float model's."""
    note = f"MSE and cosine similarity vs the float model on {found['compared_rows']} calibration rows (all in {LAYER_ERRORS_FILE})"
    rows = [
        (tensor, f"{e['mse']:.3g}", f"{e['cosine_similarity']:.4f}")
        for tensor, e in list(found["intermediate_tensors"].items())[:WORST_LAYERS_SHOWN]
    ]
    return LayerTable("Per-layer quantization error", name, note, ("tensor", "MSE", "cosine"), rows)


def layer_tables(rows: list[dict]) -> list[LayerTable]:
    """What the validations of rejected artifacts found layer by layer, from the files beside their blessings."""
    tables = []
    for row in rows:
        if row["blessed"] or not row.get("validation_uri"):
            continue
        for file, table in ((SENSITIVITY_FILE, sensitivity_table), (LAYER_ERRORS_FILE, layer_error_table)):
            uri = storage.join(row["validation_uri"], file)
            if storage.exists(uri):
                tables.append(table(row["name"], json.loads(storage.read_bytes(uri))))
    return sorted(tables, key=lambda table: table.section)  # stable: each section keeps the artifacts' order


def layer_table_lines(tables: list[LayerTable]) -> list[str]:
    """The per-layer sections of report.md."""
    lines, section = [], None
    for table in tables:
        if table.section != section:
            lines += ["", f"## {table.section}"]
            section = table.section
        lines += ["", f"**{table.artifact}**: {table.note}"]
        if table.rows:
            align = ["---" if i < 2 else "---:" for i in range(len(table.header))]  # names left, numbers right
            lines += ["", "| " + " | ".join(table.header) + " |", "|" + "|".join(align) + "|"]
            lines += ["| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |" for row in table.rows]
    return lines


def layer_table_html(tables: list[LayerTable]) -> str:
    """The per-layer sections of report.html."""
    parts, section = [], None
    for table in tables:
        if table.section != section:
            parts.append(f"<h2>{html.escape(table.section)}</h2>")
            section = table.section
        parts.append(f"<p><b>{html.escape(table.artifact)}</b>: {html.escape(table.note)}</p>")
        if table.rows:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell) if i else f'<code>{html.escape(cell)}</code>'}</td>" for i, cell in enumerate(row)) + "</tr>"
                for row in table.rows
            )
            parts.append(f'<table class="layers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "\n".join(parts)


def search_lines(search: dict[str, Any]) -> list[str]:
    """The search section: its target, which artifact it selected (or came closest, and why), and the table."""
    table = ["| " + " | ".join(SEARCH_COLUMNS) + " |", "|" + "|".join("---" for _ in SEARCH_COLUMNS) + "|"]
    table += ["| " + " | ".join(cells) + " |" for cells in search_cells(search)]
    return ["## Search", "", f"target: {search_target(search)}", "", search["verdict"], "", *table]


def search_target(search: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in search["target"].items())


def write_report(
    out: str, name: str, gates: dict[str, Any], rows: list[dict], skipped: list[dict], extras: dict[str, Any] | None = None
) -> dict:
    """summary.json, report.md (the run's model card), report.html and report.png of workflow `name`'s run in `out`."""
    summary = {
        "workflow": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run": str(out),
        "artifacts": rows,
        "skipped": skipped,
        "blessed": [r["name"] for r in rows if r["blessed"]],
        **(extras or {}),
    }
    storage.write_bytes(storage.join(out, "summary.json"), json.dumps(summary, indent=2).encode())
    png = plot_png(rows) if rows else b""
    if png:
        storage.write_bytes(storage.join(out, "report.png"), png)
    gate_text = ", ".join(f"{k} {v}" for k, v in gates.items()) or "none configured"
    rejected = [f"- **{r['name']}**: {reason}" for r in rows for reason in r["reasons"]]
    skipped_lines = [f"- **{s['name']}**: {s['reason']}" for s in skipped]
    markdown = "\n".join(
        [
            f"# ModelPress run: {name}",
            "",
            f"{summary['created']} · gates: {gate_text}",
            "",
            markdown_table(rows),
            "",
            "![accuracy vs size and latency](report.png)" if png else "",
            "",
            *(search_lines(summary["search"]) if summary.get("search") else []),
            "",
            "## Rejected" if rejected else "",
            *rejected,
            *layer_table_lines(layer_tables(rows)),
            "## Skipped" if skipped_lines else "",
            *skipped_lines,
            "## Failed" if summary.get("failed") else "",
            *(f"- **{f['task']}**: {f['reason']}" for f in summary.get("failed", [])),
        ]
    )
    storage.write_bytes(storage.join(out, "report.md"), markdown.encode())
    storage.write_bytes(storage.join(out, "report.html"), html_report(name, summary, rows, skipped, gate_text, png).encode())
    return summary


def html_report(title: str, summary: dict, rows: list[dict], skipped: list[dict], gate_text: str, png: bytes) -> str:
    header, body = table_cells(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = []
    for row, cells in zip(rows, body, strict=True):
        css = "ok" if row["blessed"] else "bad"
        trs.append(f'<tr class="{css}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    reasons = "".join(
        f"<li><b>{html.escape(r['name'])}</b>: {html.escape(reason)}</li>" for r in rows for reason in r["reasons"]
    )
    skips = "".join(f"<li><b>{html.escape(s['name'])}</b>: {html.escape(s['reason'])}</li>" for s in skipped)
    failures = "".join(f"<li><b>{html.escape(f['task'])}</b>: {html.escape(f['reason'])}</li>" for f in summary.get("failed", []))
    search, search_html = summary.get("search"), ""
    if search:
        rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in search_cells(search))
        search_html = (
            f"<h2>Search</h2><p>target: {html.escape(search_target(search))}</p><p>{html.escape(search['verdict'])}</p>"
            f"<table><thead><tr>{''.join(f'<th>{c}</th>' for c in SEARCH_COLUMNS)}</tr></thead><tbody>{rows_html}</tbody></table>"
        )
    image = f'<img alt="accuracy vs size and latency" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ModelPress: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
tr.bad td:last-child {{ color: #b00; font-weight: bold; }} tr.ok td:last-child {{ color: #070; }}
img {{ max-width: 100%; margin-top: 1em; }}
</style></head><body>
<h1>ModelPress run: {html.escape(title)}</h1>
<p>{html.escape(summary['created'])} · gates: {html.escape(gate_text)}</p>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>
{search_html}
{f'<h2>Rejected</h2><ul>{reasons}</ul>' if reasons else ''}
{f'<h2>Skipped</h2><ul>{skips}</ul>' if skips else ''}
{f'<h2>Failed</h2><ul>{failures}</ul>' if failures else ''}
{layer_table_html(layer_tables(rows))}
{image}
</body></html>
"""
