"""A push + deploy killed (SIGKILL) right before 20 different S3 writes never leaves a partial version visible
through the registry or the serving base path, and running it again completes (as an orchestrator's retry does)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelpress.io import releases, storage
from modelpress.steps.deploy import serving
from modelpress.steps.deploy.config import DeployConfig
from modelpress.steps.deploy.step import complete_versions, tree_digest, version_digest
from modelpress.steps.deploy.step import run as deploy
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run as push
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

KILL_POINTS = 20
# The client calls that change the bucket. upload_file and copy call put_object / copy_object (or finish a multipart
# upload) on the same client, so wrapping these counts each write once.
WRITE_METHODS = ("put_object", "copy_object", "complete_multipart_upload", "delete_objects")


def publish_and_deploy(prefix: str, run: Path, overwrite: bool = False) -> None:
    """What `modelpress run` does after validation: push the run's blessed artifacts, deploy its SavedModel."""
    validations = [str(run / "validation" / name) for name in ("train", "tflite_fp32")]
    release, deployment = f"{prefix}/run/release/push", f"{prefix}/run/deployment/deploy"
    push(PushConfig(push={"uri": f"{prefix}/registry", "model_name": "tiny"}), {"validations": validations}, release, overwrite)
    inputs = {"model": str(run / "artifacts" / "train"), "validation": validations[0], "release": release}
    deploy(DeployConfig(serving={"model_name": "tiny", "base_path": f"{prefix}/serving"}), inputs, deployment, overwrite)


def describe(method: str, args: tuple, kwargs: dict) -> str:
    if method == "delete_objects":
        return f"delete_objects ({len(kwargs['Delete']['Objects'])} keys)"
    key = re.sub(r"staging-[0-9a-f]{8}", "staging-*", kwargs["Key"])  # staging names are random
    return f"{method} {key.split('/', 1)[1]}"


@contextlib.contextmanager
def counted_writes(kill_before: int | None = None):
    """Count the S3 client's writes; with `kill_before`, SIGKILL this process right before that write."""
    client = storage.s3_client()
    writes: list[str] = []
    originals = {name: getattr(client, name) for name in WRITE_METHODS}

    def counting(name, method):
        def wrapped(*args, **kwargs):
            writes.append(describe(name, args, kwargs))
            if len(writes) == kill_before:
                print(f"killed before write {len(writes)}: {writes[-1]}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return method(*args, **kwargs)

        return wrapped

    for name, method in originals.items():
        setattr(client, name, counting(name, method))
    try:
        yield writes
    finally:
        for name, method in originals.items():
            setattr(client, name, method)


KILLED_RUN = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tests.steps.push.test_step_faults import counted_writes, publish_and_deploy
with counted_writes(kill_before=int(sys.argv[3])):
    publish_and_deploy(sys.argv[1], Path(sys.argv[2]))
"""


# Writes that change what a re-run or a reader finds: the version claim, a manifest, a label, a served version, the
# deployment state and config, a step's completion marker.
COMPLETING_WRITES = ("claims/1", "manifest.json", "labels/", "serving/tiny/1/saved_model.pb", "_modelpress/", "models.config",
                     "copy_object run/release/push/release.json", "copy_object run/deployment/deploy/deployment.json")


def kill_points(writes: list[str]) -> list[int]:
    """KILL_POINTS write numbers: right before and right after every completing write, the rest spread evenly."""
    completing = [n for n, write in enumerate(writes, 1) if any(part in write for part in COMPLETING_WRITES)]
    chosen = {p for n in completing for p in (n, n + 1) if p <= len(writes)}
    others = [n for n in range(1, len(writes) + 1) if n not in chosen]
    spare = KILL_POINTS - len(chosen)
    assert 0 <= spare <= len(others), (len(chosen), writes)
    chosen |= {others[round(i * (len(others) - 1) / max(spare - 1, 1))] for i in range(spare)}
    assert len(chosen) == KILL_POINTS
    return sorted(chosen)


def visible_state(prefix: str, run: Path) -> str:
    """Check that whatever the registry and the base path show is complete; describe it in a few words."""
    registry, base = f"{prefix}/registry", f"{prefix}/serving"
    versions = releases.list_versions(registry, "tiny")
    assert versions in ([], [1])
    for version in versions:
        manifest = releases.read_manifest(registry, "tiny", version)
        for path, entry in manifest["files"].items():
            data = storage.read_bytes(f"{releases.version_uri(registry, 'tiny', version)}/{path}")
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], path
    label = releases.read_label(registry, "tiny", "current")
    assert label is None or label["version"] in versions
    deployed = complete_versions(base, "tiny")
    assert deployed in ([], [1])
    for version in deployed:
        assert version_digest(base, "tiny", version) == tree_digest(run / "artifacts" / "train" / "saved_model")
    state = serving.load_state(base, "tiny")
    assert state["stable"] is None or state["stable"] in deployed
    if storage.exists(f"{base}/{serving.CONFIG_FILE}"):
        assert f"versions: {state['stable']}" in storage.read_bytes(f"{base}/{serving.CONFIG_FILE}").decode()
    return f"registry versions {versions}, label current {label and label['version']}, serving versions {deployed}, stable {state['stable']}"


def assert_complete(prefix: str) -> None:
    assert releases.list_versions(f"{prefix}/registry", "tiny") == [1]
    assert releases.read_label(f"{prefix}/registry", "tiny", "current")["version"] == 1
    assert complete_versions(f"{prefix}/serving", "tiny") == [1]
    assert serving.load_state(f"{prefix}/serving", "tiny")["stable"] == 1
    record = json.loads(storage.read_bytes(f"{prefix}/run/deployment/deploy/deployment.json"))
    assert (record["version"], record["stable"]) == (1, 1)


def test_sigkill_before_20_different_writes_never_exposes_a_partial_version(s3, trained_runs, capsys):
    run = trained_runs["a"]
    with counted_writes() as writes:  # the writes of one uninterrupted push + deploy
        publish_and_deploy(f"s3://{s3}/reference", run)
    assert_complete(f"s3://{s3}/reference")
    points = kill_points(writes)

    def killed_run(point: int) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", KILLED_RUN, f"s3://{s3}/killed-{point}", str(run), str(point)]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:  # independent prefixes: two killed runs at a time
        results = dict(zip(points, pool.map(killed_run, points), strict=True))
    summary = []
    for point, killed in results.items():
        prefix = f"s3://{s3}/killed-{point}"
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert f"killed before write {point}: {writes[point - 1]}" in killed.stderr
        seen = visible_state(prefix, run)
        publish_and_deploy(prefix, run, overwrite=True)
        assert_complete(prefix)
        summary.append(f"write {point:>2}/{len(writes)} {writes[point - 1]:<70} -> after the kill: {seen}; re-run complete")
    with capsys.disabled():
        print("\n" + "\n".join(summary))


@pytest.fixture(autouse=True)
def _fresh_client(s3):
    """The counting wrappers live on the cached client: give each test its own."""
    storage.configure(None)
    yield
    storage.configure(None)
