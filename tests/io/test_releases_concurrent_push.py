"""Pushes racing each other, locally and on S3 (moto's server over HTTP): 8 pushes released at the same moment, 10
trials each. Counted over all trials: labels that moved backwards, label history entries lost, versions holding a
bundle another version already holds. Each must be 0. The version claim itself is also raced from two processes
released at a controlled moment."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelpress.io import releases, storage
from modelpress.steps.validate.config import ValidateConfig
from modelpress.steps.validate.step import run as validate
from tests.conftest import ROOT
from tests.tampering import refinish

pytestmark = pytest.mark.integration

PUSHES, TRIALS, BUNDLES = 8, 10, 4
# One push process: imports first, says it is ready, waits for the start signal, then pushes.
RACER = """
import json, sys, time
from pathlib import Path
from modelpress.io import storage
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run
registry, output, ready, go, *validations = sys.argv[1:]
config = PushConfig(push={"uri": registry, "model_name": "tiny"})
storage.configure(None)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
record = run(config, {"validations": validations}, output)
print(json.dumps({"version": record["version"], "digest": record["digest"], "moved": record["labels_moved"]}))
"""


@pytest.fixture(scope="module")
def bundles(trained_runs, tmp_path_factory) -> list[str]:
    """BUNDLES validations of distinct artifacts: run a's TFLite model, each copy carrying its own notes file."""
    root = tmp_path_factory.mktemp("bundles")
    validations = []
    for number in range(BUNDLES):
        artifact = root / f"artifact-{number}"
        shutil.copytree(trained_runs["a"] / "artifacts" / "tflite_fp32", artifact)
        (artifact / "notes.txt").write_text(f"variant {number}\n")
        refinish(artifact)
        config = ValidateConfig(name="tflite_fp32", data={"source": "digits"}, evaluation={"latency_runs": 5, "warmup_runs": 0})
        validate(config, {"model": str(artifact)}, str(root / f"validation-{number}"))
        validations.append(str(root / f"validation-{number}"))
    return validations


def race(registry: str, bundles: list[str], folder: Path) -> list[dict]:
    """PUSHES push processes, each bundle pushed twice, released together once all are ready."""
    folder.mkdir(parents=True)
    go = folder / "go"
    processes = []
    for number in range(PUSHES):
        ready = folder / f"ready-{number}"
        output = f"{registry.rsplit('/', 1)[0]}/runs/{folder.name}-{number}/push"
        command = [sys.executable, "-c", RACER, registry, output, str(ready), str(go), bundles[number % len(bundles)]]
        processes.append((ready, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    results = []
    for _, process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.splitlines()[-1]))
    return results


def judge(registry: str, results: list[dict]) -> dict[str, int]:
    versions = releases.list_versions(registry, "tiny")
    digests = [releases.read_manifest(registry, "tiny", v)["digest"] for v in versions]
    label = releases.read_label(registry, "tiny", "current")
    trail = [*label["history"], label["version"]]
    moved_to = {r["version"] for r in results if "current" in r["moved"]}
    assert {r["digest"] for r in results} == set(digests), "every push names a version that holds its bundle"
    return {
        "backwards labels": int(label["version"] != max(versions)) + sum(b <= a for a, b in zip(trail, trail[1:], strict=False)),
        "lost history": len(moved_to - set(trail)),
        "duplicate versions": len(digests) - len(set(digests)),
        "versions": len(versions),
    }


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_eight_pushes_at_once(where, bundles, tmp_path, request, capsys):
    totals = {"backwards labels": 0, "lost history": 0, "duplicate versions": 0}
    for trial in range(TRIALS):
        if where == "s3":
            registry = f"s3://{request.getfixturevalue('s3')}/trial-{trial}/registry"
        else:
            registry = str(tmp_path / f"trial-{trial}" / "registry")
        counts = judge(registry, race(registry, bundles, tmp_path / f"race-{trial}"))
        assert counts["versions"] == BUNDLES
        for key in totals:
            totals[key] += counts[key]
    with capsys.disabled():
        print(f"\n{where}: {TRIALS} trials x {PUSHES} pushes: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    assert totals == {"backwards labels": 0, "lost history": 0, "duplicate versions": 0}


def claim_at(registry: str, version: int, digest: str, run_id: str, barrier, results) -> None:
    storage.configure(None)
    barrier.wait()  # both processes leave here together: the claims hit the store at the same moment
    results.put((run_id, releases.claim_version(registry, "tiny", version, digest, run_id)["run_id"]))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_processes_claiming_one_version_at_the_same_moment(where, tmp_path, request):
    context = multiprocessing.get_context("spawn")
    winners = []
    for attempt in range(5):
        registry = f"s3://{request.getfixturevalue('s3')}/claims-{attempt}" if where == "s3" else str(tmp_path / f"claims-{attempt}")
        barrier, results = context.Barrier(2), context.Queue()
        racers = [context.Process(target=claim_at, args=(registry, 1, f"{run}" * 64, run, barrier, results)) for run in "ab"]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(60)
        outcome = dict(results.get(timeout=5) for _ in racers)
        assert outcome["a"] == outcome["b"], outcome  # both see the same holder
        holder = releases.read_claim(registry, "tiny", 1)
        assert holder["run_id"] == outcome["a"] and holder["digest"] == outcome["a"] * 64
        winners.append(holder["run_id"])
        # the loser's re-run must not take the number; the winner's re-run takes it back with its new bundle
        loser = "b" if holder["run_id"] == "a" else "a"
        assert releases.claim_version(registry, "tiny", 1, "c" * 64, loser)["run_id"] == holder["run_id"]
        assert releases.claim_version(registry, "tiny", 1, "d" * 64, holder["run_id"])["digest"] == "d" * 64
    assert set(winners) <= {"a", "b"} and len(winners) == 5
