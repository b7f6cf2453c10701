"""`modelpress registry history MODEL`: accuracy, size and latency of every release, per artifact, and regressions.

Each release's manifest lists its blessed artifacts (name, format, validation metrics). An artifact of the newest
release regresses when its accuracy is lower than the best of the same artifact in the previous --last releases by
more than --threshold, or its size or batch-1 latency (p50) is more than 10% above the smallest of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelpress.common.errors import UserError
from modelpress.io import releases

DEFAULT_LAST = 3
DEFAULT_THRESHOLD = 0.005
MAX_GROWTH = 0.10
# metric key, what the regression lines call it, how they show a value
GROWING_METRICS = (("size_bytes", "size", "{:,.0f} bytes"), ("latency_ms_p50", "latency p50", "{:.4g} ms"))


@dataclass(frozen=True)
class Row:
    version: int
    created: str
    name: str
    format: str
    accuracy: float | None
    size_bytes: int | None
    latency_ms_p50: float | None


def history_rows(root: str, model: str) -> list[Row]:
    """One row per artifact of every complete release, oldest release first."""
    versions = releases.list_versions(root, model)
    if not versions:
        raise UserError(f"model '{model}' has no published versions in {root}; run push first or check --uri")
    rows = []
    for version in versions:
        manifest = releases.read_manifest(root, model, version)
        for entry in manifest["artifacts"]:
            metrics = entry.get("metrics") or {}
            rows.append(
                Row(version, manifest["created"], entry["name"], entry["format"], metrics.get("accuracy"),
                    metrics.get("size_bytes"), metrics.get("latency_ms_p50"))
            )
    return rows


def regressions(rows: list[Row], last: int = DEFAULT_LAST, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """What got worse in the newest release against the previous `last` releases, one line each."""
    newest = max(row.version for row in rows)
    earlier = sorted({row.version for row in rows if row.version < newest})[-last:]
    found = []
    for row in (r for r in rows if r.version == newest):
        previous = [r for r in rows if r.name == row.name and r.version in earlier]
        if not previous:
            continue
        span = f"v{previous[0].version}" + (f"-v{previous[-1].version}" if len(previous) > 1 else "")
        accuracies = [r.accuracy for r in previous if r.accuracy is not None]
        if row.accuracy is not None and accuracies and max(accuracies) - row.accuracy > threshold:
            found.append(
                f"{row.name} ({row.format}) v{newest}: accuracy {row.accuracy:.4f} is {max(accuracies) - row.accuracy:.4f} "
                f"below the best of {span} ({max(accuracies):.4f}; threshold {threshold})"
            )
        for key, label, unit in GROWING_METRICS:
            value, before = getattr(row, key), [getattr(r, key) for r in previous if getattr(r, key) is not None]
            if value is not None and before and value > min(before) * (1 + MAX_GROWTH):
                found.append(
                    f"{row.name} ({row.format}) v{newest}: {label} {unit.format(value)} is {value / min(before) - 1:.1%} "
                    f"above the smallest of {span} ({unit.format(min(before))}; allowed {MAX_GROWTH:.0%})"
                )
    return found


def table(rows: list[Row]) -> str:
    def shown(value, text: str) -> str:
        return "-" if value is None else text.format(value)

    lines = [f"{'version':>7}  {'created':<20}  {'artifact':<16}  {'format':<16}  {'accuracy':>8}  {'size KiB':>9}  {'p50 ms':>8}"]
    for row in sorted(rows, key=lambda r: (r.version, r.name)):
        lines.append(
            f"{row.version:>7}  {row.created:<20}  {row.name:<16}  {row.format:<16}  {shown(row.accuracy, '{:.4f}'):>8}  "
            f"{shown(row.size_bytes and row.size_bytes / 1024, '{:.1f}'):>9}  {shown(row.latency_ms_p50, '{:.3f}'):>8}"
        )
    return "\n".join(lines)


def plot(rows: list[Row], model: str, path: Path) -> None:
    """Accuracy per release, one line per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 4.2))
    for name in sorted({row.name for row in rows}):
        points = [(r.version, r.accuracy) for r in rows if r.name == name and r.accuracy is not None]
        axis.plot([v for v, _ in points], [a for _, a in points], marker="o", label=name)
    axis.set_xticks(sorted({row.version for row in rows}))
    axis.set_xlabel("release (version)")
    axis.set_ylabel("test accuracy")
    axis.set_title(f"{model}: accuracy per release")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("model")
    parser.add_argument("--uri", help="registry: s3://bucket/prefix or folder (default: $MODELPRESS_REGISTRY)")
    parser.add_argument(
        "--last", type=int, default=DEFAULT_LAST, metavar="N",
        help=f"compare the newest release with the N before it (default {DEFAULT_LAST})",
    )
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD,
        help=f"accuracy drop below the best of those that is a regression (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="also write a plot of accuracy per release and artifact")


def cmd_history(args, root: str) -> int:
    """Exit 1 when the newest release regressed, so a CI job can stop on it."""
    if args.last < 1 or args.threshold < 0:
        raise UserError(f"--last must be at least 1 and --threshold at least 0 (got {args.last} and {args.threshold})")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot {args.plot} must be a .png file")
    rows = history_rows(root, args.model)
    found = regressions(rows, args.last, args.threshold)
    print(table(rows))
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(rows, args.model, Path(args.plot))
        print(f"plot: {args.plot}")
    for line in found:
        print(f"REGRESSION {line}")
    versions = sorted({row.version for row in rows})
    if len(versions) == 1:
        print(f"v{versions[0]} is the only release: nothing to compare it with")
    elif not found:
        earlier = versions[:-1][-args.last:]
        print(f"no regression in v{versions[-1]} against v{earlier[0]}" + (f"-v{earlier[-1]}" if len(earlier) > 1 else ""))
    return 1 if found else 0
