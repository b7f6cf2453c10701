"""The harness the benches share: run workflow specs through the real plan and steps, measure every artifact with
the validate step in fresh processes, round-robin, and print and write the rows.

Each spec goes through `build_plan`, so a benchmarked artifact is exactly what `modelpress run` would make of it.
Model steps (train, compress techniques, convert) run in this process through the registry; identical tasks (same
step, config and inputs) run once per bench, so every recipe of a workload starts from the same trained model. Every
model artifact is then measured by `modelpress step validate` in a new subprocess, one at a time, so one runtime's
thread pools never share a process or the CPU with another's. The measurements are interleaved: each repeat times
every artifact once (at every thread count) before the next repeat starts, so a change of load on a shared machine
spreads over all artifacts instead of landing on the ones timed last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
ALL_THREADS = os.cpu_count() or 1


@dataclass
class Measured:
    """One artifact as the validate step measured it in its own processes."""

    workload: str
    name: str
    kind: str  # peer, modelpress or technique
    format: str
    runtime: str
    blessed: bool
    accuracy: float
    drop_pp: float  # percentage points below baseline_accuracy
    baseline_accuracy: float  # the trained (uncompressed) model of the spec, measured by validate in TensorFlow
    test_examples: int
    params: int | None
    size_bytes: int
    size_gzip_bytes: int
    latency_ms_p50: float  # batch-1, with the first thread count: median of the repeats' p50
    latency_ms_p95: float  # median of the repeats' p95
    latency_ms_p50_min: float  # spread of p50 across repeats
    latency_ms_p50_max: float
    repeats: int
    throughput_per_s: float  # full batches of evaluation.batch_size, with the first thread count
    threads: int | None
    # The same with every core (None when the bench times one thread count only)
    latency_ms_p50_all_threads: float | None = None
    throughput_per_s_all_threads: float | None = None
    all_threads: int | None = None
    seed: int | None = None  # train.seed of the spec that made it
    epochs: dict[str, int] = field(default_factory=dict)  # training epochs asked of each step that made it, trained model first
    train_seconds: float = 0.0  # wall seconds of the steps that made it (training, compression, conversion)
    reasons: list[str] = field(default_factory=list)
    uri: str = ""
    validation_uri: str = ""

    def row(self, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        values = asdict(self)
        return values if fields is None else {name: values[name] for name in fields}


@dataclass
class Pending:
    """An artifact a spec made, waiting for its validations. `name` None: measured only as the baseline of others."""

    workload: str
    name: str | None
    kind: str
    task: Task
    inputs: dict[str, str]
    seed: int


@dataclass
class Made:
    """A step's output: how many epochs it trained, its wall time, and the model it started from."""

    step: str
    epochs: int | None
    seconds: float
    parent: str | None


def training_epochs(config) -> int | None:
    """Epochs a step's config asks for (its own `epochs`, else the workflow's train.epochs); None when it does not train."""
    own = getattr(config, "epochs", None)
    if own is not None:
        return own
    train = getattr(config, "train", None)
    return train.epochs if train is not None else None


class Bench:
    """Runs workflow specs' plans into `work` and measures their artifacts; one instance per bench run.

    `threads`: the CPU thread counts every artifact is timed with (each in its own validate process); the first one's
    first run is the artifact's validation (accuracy, blessing)."""

    def __init__(self, work: Path = WORK, repeats: int = 3, threads: tuple[int, ...] = (1,)):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        self.work = work
        self.repeats = repeats
        self.threads = tuple(dict.fromkeys(threads))
        self._outputs: dict[str, str] = {}  # task key -> output URI (tasks already run)
        self._made: dict[str, Made] = {}  # output URI -> what made it
        self._validations: dict[str, tuple[str, dict]] = {}  # model URI -> (validation URI, its blessing)
        self._timings: dict[str, dict[int, dict]] = {}  # model URI -> thread count -> latency summary
        self.seconds: dict[str, float] = {}  # step name -> wall seconds spent in it

    def _key(self, task: Task, inputs: dict[str, str]) -> str:
        text = json.dumps([task.step, spec_hash(task.config), sorted(inputs.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _timed(self, step: str, started: float) -> float:
        elapsed = time.monotonic() - started
        self.seconds[step] = self.seconds.get(step, 0.0) + elapsed
        return elapsed

    def run_spec(self, spec: dict, workload: str, kind: str, names: dict[str, str]) -> list[Measured]:
        """Build a spec's artifacts and measure them (see build and measure)."""
        return self.measure(self.build(spec, workload, kind, names))

    def build(self, spec: dict, workload: str, kind: str, names: dict[str, str]) -> list[Pending]:
        """Run a workflow spec's model steps; return its validations still to run: the artifacts in `names` (plan
        artifact name -> row name) and the trained model, whose accuracy is the baseline drops are counted from."""
        workflow = parse_workflow(spec, source=f"bench spec {spec['name']}")
        uris: dict[str, str] = {}
        pending: list[Pending] = []
        for task in build_plan(workflow):
            if task.step in ("push", "deploy"):
                continue
            if task.step == "validate":
                if task.artifact != "train" and task.artifact not in names:
                    continue
                inputs = {name: uris[source] for name, source in task.inputs.items() if source in uris}
                uris[task.id] = str(validation_folder(inputs["model"]))
                pending.append(Pending(workload, names.get(task.artifact), kind, task, inputs, workflow.train.seed))
                continue
            inputs = {name: uris[source] for name, source in task.inputs.items()}
            key = self._key(task, inputs)
            if key not in self._outputs:
                output = str(self.work / workload / f"{task.id}-{key}")
                log(f"bench {workload}: {task.id} ({spec['name']})")
                started = time.monotonic()
                result = get_step(task.step).load()(task.config, inputs, output)
                seconds = self._timed(task.step, started)
                if result.get("skipped"):
                    raise RuntimeError(f"{spec['name']}: {task.id} skipped ({result['reason']}); the bench needs every artifact")
                self._outputs[key] = output
                self._made[output] = Made(task.step, training_epochs(task.config), seconds, inputs.get("model"))
            uris[task.id] = self._outputs[key]
        return pending

    def measure(self, pending: list[Pending]) -> list[Measured]:
        """Validate every pending artifact at every thread count, `repeats` times, round-robin: each repeat runs
        every (artifact, threads) once, in plan order first (a validation reads its parent's), then rotated."""
        todo = list({p.inputs["model"]: p for p in pending if p.inputs["model"] not in self._validations}.values())
        samples: dict[tuple[str, int], list[dict]] = {}
        for repeat, (p, threads) in round_robin([(p, threads) for p in todo for threads in self.threads], self.repeats):
            blessing = self._validate(p, threads, keep=repeat == 0 and threads == self.threads[0])
            samples.setdefault((p.inputs["model"], threads), []).append(blessing["metrics"])
        for (model, threads), metrics in samples.items():
            self._timings.setdefault(model, {})[threads] = latency_summary(metrics)
        return [self.measured(p) for p in pending if p.name is not None]

    def _validate(self, p: Pending, threads: int, keep: bool) -> dict:
        """One `modelpress step validate` process on an artifact with `threads`; its blessing. The kept run's output
        is the artifact's validation (blessing, predictions), the others only add timings."""
        model = p.inputs["model"]
        folder = validation_folder(model)
        output = folder if keep else folder.parent / f"{folder.name}.threads{threads}"
        config = p.task.config.model_copy(update={"evaluation": p.task.config.evaluation.model_copy(update={"threads": threads})})
        config_file = folder.parent / f"{folder.name}.threads{threads}.config.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(config.model_dump_json())
        started = time.monotonic()
        run_step_process("validate", config_file, p.inputs, output)
        self._timed("validate", started)
        blessing = json.loads((output / "blessing.json").read_text())
        if keep:
            self._validations[model] = (str(folder), blessing)
        else:
            shutil.rmtree(output)
        return blessing

    def budget(self, model: str) -> tuple[dict[str, int], float]:
        """Epochs per training step and wall seconds of every step along a model's lineage, trained model first."""
        epochs, seconds, uri = {}, 0.0, model
        while uri in self._made:
            made = self._made[uri]
            if made.epochs is not None:
                epochs[made.step] = made.epochs
            seconds += made.seconds
            uri = made.parent
        return dict(reversed(epochs.items())), round(seconds, 1)

    def measured(self, p: Pending) -> Measured:
        model = p.inputs["model"]
        validation, blessing = self._validations[model]
        metrics, timings = blessing["metrics"], self._timings[model]
        first, every = timings[self.threads[0]], timings.get(self.threads[-1]) if len(self.threads) > 1 else None
        baseline = blessing["baseline"]["accuracy"] if blessing["baseline"] else metrics["accuracy"]
        epochs, seconds = self.budget(model)
        return Measured(
            workload=p.workload,
            name=p.name,
            kind=p.kind,
            format=blessing["format"],
            runtime=blessing["runtime"],
            blessed=blessing["blessed"],
            accuracy=metrics["accuracy"],
            drop_pp=round((baseline - metrics["accuracy"]) * 100, 4),
            baseline_accuracy=baseline,
            test_examples=metrics["test_examples"],
            params=metrics.get("params"),
            size_bytes=metrics["size_bytes"],
            size_gzip_bytes=metrics["size_gzip_bytes"],
            **first,
            latency_ms_p50_all_threads=every["latency_ms_p50"] if every else None,
            throughput_per_s_all_threads=every["throughput_per_s"] if every else None,
            all_threads=every["threads"] if every else None,
            seed=p.seed,
            epochs=epochs,
            train_seconds=seconds,
            reasons=blessing["reasons"],
            uri=model,
            validation_uri=validation,
        )


def round_robin(runs: list, repeats: int) -> list[tuple[int, Any]]:
    """(repeat, run) in the order they are timed: every run once per repeat; the first repeat in the given order,
    each later one rotated by a share of the list, so no run is always timed first or last."""
    order = []
    for repeat in range(repeats):
        shift = repeat * len(runs) // repeats
        order += [(repeat, run) for run in runs[shift:] + runs[:shift]]
    return order


def validation_folder(model: str) -> Path:
    """Where an artifact's validation goes: beside the artifacts, one folder per model."""
    return Path(model).parent / "validation" / Path(model).name


def latency_summary(metrics: list[dict]) -> dict[str, Any]:
    """The timings of one artifact at one thread count over the repeats: medians, and the p50's min-max."""
    p50s = [m["latency_ms_p50"] for m in metrics]
    return {
        "latency_ms_p50": statistics.median(p50s),
        "latency_ms_p95": statistics.median([m["latency_ms_p95"] for m in metrics]),
        "latency_ms_p50_min": min(p50s),
        "latency_ms_p50_max": max(p50s),
        "throughput_per_s": statistics.median([m["throughput_per_s"] for m in metrics]),
        "repeats": len(metrics),
        "threads": metrics[0]["threads"],
    }


# ----------------------------------------------------------------------------------------------------- statistics
def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on n examples (sound near 0 and 1, unlike accuracy +- 2 SE)."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_drop_interval(reference_correct: np.ndarray, correct: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of an accuracy drop in pp, resampling test examples with both models' answers kept
    together: the two models are measured on the same examples, so their errors are not independent."""
    index = np.random.default_rng(seed).integers(0, len(correct), size=(resamples, len(correct)))
    drops = (reference_correct[index].mean(axis=1) - correct[index].mean(axis=1)) * 100
    low, high = np.percentile(drops, [2.5, 97.5])
    return float(low), float(high)


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
