"""A push SIGKILLed inside a multipart upload (before it starts, between parts, before it completes) leaves no
partial version, and running it again (as an orchestrator's retry does) completes the version and aborts every
upload the killed attempt left: 0 partial versions, 0 leftover uploads."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from modelpress.io import releases, storage
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run as push
from modelpress.steps.validate.config import ValidateConfig
from modelpress.steps.validate.step import run as validate
from tests.conftest import ROOT
from tests.tampering import refinish

pytestmark = pytest.mark.integration

PART_MB = 5
# Kill this process right before the n-th call of one S3 client method, then push.
KILLED_PUSH = """
import os, signal, sys
from modelpress.io import storage
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run
registry, output, validation, method, nth = sys.argv[1:]
storage.configure(None)
client = storage.s3_client()
original, calls = getattr(client, method), []
def counted(*args, **kwargs):
    calls.append(method)
    if len(calls) == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(client, method, counted)
run(PushConfig(push={"uri": registry, "model_name": "tiny", "part_size_mb": PART_MB, "max_concurrency": 1}), {"validations": [validation]}, output)
""".replace("PART_MB", str(PART_MB))
KILL_POINTS = [("create_multipart_upload", 1), ("upload_part", 1), ("upload_part", 2), ("upload_part", 3), ("complete_multipart_upload", 1)]


@pytest.fixture(scope="module")
def fat_validation(trained_runs, tmp_path_factory) -> str:
    """A validated TFLite artifact carrying 12 MiB of extra data, so its push is a multipart upload of 3 parts."""
    root = tmp_path_factory.mktemp("fat")
    artifact = root / "artifact"
    shutil.copytree(trained_runs["a"] / "artifacts" / "tflite_fp32", artifact)
    (artifact / "padding.bin").write_bytes(np.random.default_rng(0).bytes(12 << 20))
    refinish(artifact)
    config = ValidateConfig(name="tflite_fp32", data={"source": "digits"}, evaluation={"latency_runs": 5, "warmup_runs": 0})
    validate(config, {"model": str(artifact)}, str(root / "validation"))
    return str(root / "validation")


@pytest.mark.slow
def test_kills_inside_a_multipart_upload_leave_nothing_after_the_rerun(s3, fat_validation, capsys):
    summary = []
    for method, nth in KILL_POINTS:
        prefix = f"s3://{s3}/{method}-{nth}"
        registry, output = f"{prefix}/registry", f"{prefix}/run/release/push"
        command = [sys.executable, "-c", KILLED_PUSH, registry, output, fat_validation, method, str(nth)]
        killed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        left = len(storage.incomplete_uploads(registry))
        assert releases.list_versions(registry, "tiny") == []  # nothing partial is visible

        storage.configure(None)
        record = push(PushConfig(push={"uri": registry, "model_name": "tiny", "part_size_mb": PART_MB}), {"validations": [fat_validation]}, output)
        assert (record["version"], releases.list_versions(registry, "tiny")) == (1, [1])
        manifest = releases.read_manifest(registry, "tiny", 1)
        for path, entry in manifest["files"].items():
            data = storage.read_bytes(f"{releases.version_uri(registry, 'tiny', 1)}/{path}")
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], path
        assert releases.read_label(registry, "tiny", "current")["version"] == 1
        after = len(storage.incomplete_uploads(f"s3://{s3}/{method}-{nth}"))
        assert after == 0
        summary.append(f"killed before {method} #{nth}: {left} incomplete upload(s) left, 0 partial versions; after the re-run: {after} uploads, version 1 complete")
    with capsys.disabled():
        print("\n" + "\n".join(summary))
