"""The harness bench.techniques and bench.reference share: run workflow specs through the real plan and steps,
measure every artifact with the validate step in its own fresh process, and print and write the rows.

Each spec goes through `build_plan`, so a benchmarked artifact is exactly what `modelpress run` would make of it.
Model steps (train, compress techniques, convert) run in this process through the registry; identical tasks (same
step, config and inputs) run once per bench, so every recipe of a workload starts from the same trained model.
Every model artifact is then measured by `modelpress step validate` in a new subprocess, one after another: one
runtime's thread pools never share a process with another's, and measurements never overlap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelpress.common.progress import log
from modelpress.contract.schema import spec_hash
from modelpress.contract.workflow import parse_workflow
from modelpress.execution.plan import Task, build_plan
from modelpress.io.report import _fmt as report_format
from modelpress.steps.catalog import get_step

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
WORK = ROOT / "runs" / "bench"
STEP_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@dataclass
class Measured:
    """One artifact as the validate step measured it in its own process."""

    workload: str
    name: str
    kind: str  # peer, modelpress or technique
    format: str
    runtime: str
    blessed: bool
    accuracy: float
    drop_pp: float  # percentage points below baseline_accuracy
    baseline_accuracy: float  # the trained (uncompressed) model of the spec, measured by validate in TensorFlow
    params: int | None
    size_bytes: int
    size_gzip_bytes: int
    latency_ms_p50: float  # median of the repeats' p50
    latency_ms_p95: float  # median of the repeats' p95
    latency_ms_p50_min: float  # spread of p50 across repeats
    latency_ms_p50_max: float
    repeats: int
    throughput_per_s: float
    threads: int | None
    reasons: list[str] = field(default_factory=list)
    uri: str = ""
    validation_uri: str = ""

    def row(self, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        values = asdict(self)
        return values if fields is None else {name: values[name] for name in fields}


class Bench:
    """Runs workflow specs' plans into `work` and measures their artifacts; one instance per bench run."""

    def __init__(self, work: Path = WORK, repeats: int = 3):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        self.work = work
        self.repeats = repeats
        self._outputs: dict[str, str] = {}  # task key -> output URI (tasks already run)
        self._validations: dict[str, tuple[str, dict]] = {}  # model URI -> (validation URI, its blessing)
        self.seconds: dict[str, float] = {}  # step name -> wall seconds spent in it

    def _key(self, task: Task, inputs: dict[str, str]) -> str:
        text = json.dumps([task.step, spec_hash(task.config), sorted(inputs.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _timed(self, step: str, started: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + time.monotonic() - started

    def run_spec(self, spec: dict, workload: str, kind: str, names: dict[str, str]) -> list[Measured]:
        """Run a workflow spec's plan and measure the artifacts in `names` (plan artifact name -> row name).

        The trained model is always measured too: its accuracy is the baseline drops are counted from."""
        workflow = parse_workflow(spec, source=f"bench spec {spec['name']}")
        uris: dict[str, str] = {}
        rows: list[Measured] = []
        for task in build_plan(workflow):
            if task.step in ("push", "deploy"):
                continue
            if task.step == "validate":
                if task.artifact != "train" and task.artifact not in names:
                    continue
                inputs = {name: uris[source] for name, source in task.inputs.items() if source in uris}
                validation, blessing = self.validate(task, inputs)
                uris[task.id] = validation
                if task.artifact in names:
                    rows.append(self.measured(blessing, workload, names[task.artifact], kind, inputs["model"], validation))
                continue
            inputs = {name: uris[source] for name, source in task.inputs.items()}
            key = self._key(task, inputs)
            if key not in self._outputs:
                output = str(self.work / workload / f"{task.id}-{key}")
                log(f"bench {workload}: {task.id} ({spec['name']})")
                started = time.monotonic()
                result = get_step(task.step).load()(task.config, inputs, output)
                self._timed(task.step, started)
                if result.get("skipped"):
                    raise RuntimeError(f"{spec['name']}: {task.id} skipped ({result['reason']}); the bench needs every artifact")
                self._outputs[key] = output
            uris[task.id] = self._outputs[key]
        return rows

    def validate(self, task: Task, inputs: dict[str, str]) -> tuple[str, dict]:
        """The validate step on one artifact, `repeats` times, each in a fresh `modelpress step validate` process.

        The first run's output is the artifact's validation (blessing, predictions); the others only add latency
        repeats. Returns the validation URI and the blessing with latencies summarised over the repeats."""
        model = inputs["model"]
        if model in self._validations:
            return self._validations[model]
        folder = Path(model).parent / "validation" / Path(model).name
        folder.parent.mkdir(parents=True, exist_ok=True)
        config_file = folder.parent / f"{Path(model).name}.config.json"
        config_file.write_text(task.config.model_dump_json())
        blessings = []
        for repeat in range(self.repeats):
            output = folder if repeat == 0 else folder.parent / f"{folder.name}.repeat{repeat}"
            started = time.monotonic()
            run_step_process("validate", config_file, inputs, output)
            blessings.append(json.loads((output / "blessing.json").read_text()))
            self._timed("validate", started)
            if repeat:
                shutil.rmtree(output)
        blessing = dict(blessings[0])
        p50s = [b["metrics"]["latency_ms_p50"] for b in blessings]
        blessing["metrics"] = {
            **blessing["metrics"],
            "latency_ms_p50": statistics.median(p50s),
            "latency_ms_p95": statistics.median([b["metrics"]["latency_ms_p95"] for b in blessings]),
            "latency_ms_p50_min": min(p50s),
            "latency_ms_p50_max": max(p50s),
            "throughput_per_s": statistics.median([b["metrics"]["throughput_per_s"] for b in blessings]),
            "repeats": len(blessings),
        }
        self._validations[model] = (str(folder), blessing)
        return self._validations[model]

    @staticmethod
    def measured(blessing: dict, workload: str, name: str, kind: str, uri: str, validation: str) -> Measured:
        metrics = blessing["metrics"]
        baseline = blessing["baseline"]["accuracy"] if blessing["baseline"] else metrics["accuracy"]
        return Measured(
            workload=workload,
            name=name,
            kind=kind,
            format=blessing["format"],
            runtime=blessing["runtime"],
            blessed=blessing["blessed"],
            accuracy=metrics["accuracy"],
            drop_pp=round((baseline - metrics["accuracy"]) * 100, 4),
            baseline_accuracy=baseline,
            params=metrics.get("params"),
            size_bytes=metrics["size_bytes"],
            size_gzip_bytes=metrics["size_gzip_bytes"],
            latency_ms_p50=metrics["latency_ms_p50"],
            latency_ms_p95=metrics["latency_ms_p95"],
            latency_ms_p50_min=metrics["latency_ms_p50_min"],
            latency_ms_p50_max=metrics["latency_ms_p50_max"],
            repeats=metrics["repeats"],
            throughput_per_s=metrics["throughput_per_s"],
            threads=metrics.get("threads"),
            reasons=blessing["reasons"],
            uri=uri,
            validation_uri=validation,
        )


def run_step_process(step: str, config_file: Path, inputs: dict[str, str], output: Path) -> dict:
    """`modelpress step STEP` in a new Python process (progress on our stderr); its result JSON."""
    result_file = output.parent / f"{output.name}.result.json"
    command = [sys.executable, "-m", "modelpress", "step", step, "--config", f"@{config_file}", "--output", str(output)]
    for name, uri in inputs.items():
        command += ["--input", f"{name}={uri}"]
    completed = subprocess.run([*command, "--result", str(result_file)], stdout=subprocess.DEVNULL, env={**os.environ, **STEP_ENV})
    if completed.returncode != 0:
        raise RuntimeError(f"modelpress step {step} for {inputs.get('model')} exited with {completed.returncode} (its error is above)")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return result


def bench_arguments(prog: str, description: str, subset: str, choices: list[str]) -> argparse.ArgumentParser:
    """The options both benches take; `subset` names the option choosing what to run (models, workloads)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run of every path: tiny training, 1 repeat; numbers mean nothing")
    parser.add_argument("--repeats", type=int, default=3, help="latency repeats per artifact, each in a fresh validate process")
    parser.add_argument(f"--{subset}", nargs="+", choices=choices, default=choices, help="run only these")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the result files go")
    return parser


# --------------------------------------------------------------------------------------------------------- output
def format_value(value: Any, kind: str | None) -> str:
    """A cell: the run report's formats (acc, bytes, int, rate) plus the benches' own (pp already in points, ms at a
    precision that shows microseconds, ratio, yes)."""
    if value is None:
        return "-"
    if kind == "pp":
        return f"{value:+.2f}"
    if kind == "ms":
        return f"{value:.4f}" if value < 1 else f"{value:.3f}" if value < 100 else f"{value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"
    if kind == "yes":
        return "yes" if value else "NO"
    return report_format(value, kind) if kind else str(value)


# A column: (title, row key, format kind from format_value). Text columns (kind None) are left-aligned.
Column = tuple[str, str, str | None]


def text_table(rows: list[dict], columns: list[Column], title: str = "") -> str:
    header = [title_ for title_, _, _ in columns]
    body = [[format_value(row.get(key), kind) for _, key, kind in columns] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if kind is None else cell.rjust(width)
            for cell, width, (_, _, kind) in zip(cells, widths, columns, strict=True)
        ).rstrip()

    return "\n".join([*([title] if title else []), line(header), line(["-" * w for w in widths]), *map(line, body)])


def spread_ms(row: dict) -> str:
    """min-max of the repeats' p50, for the tables."""
    return f"{format_value(row['latency_ms_p50_min'], 'ms')}-{format_value(row['latency_ms_p50_max'], 'ms')}"


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def machine() -> dict[str, Any]:
    """What the timings were taken on: CPU model, cores and the load average (the machine may be shared)."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    return {
        "cpu": names[0] if names else platform.processor(),
        "cores": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }
