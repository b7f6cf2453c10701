"""Storage on local disk and on a real S3 endpoint (moto server over HTTP): staged outputs, kills, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import boto3
import pytest

from modelpress.common.errors import UserError
from modelpress.io import artifacts, storage
from modelpress.io.artifacts import ArtifactMeta

pytestmark = pytest.mark.integration


def make_artifact(folder, payload: bytes = b"weights" * 1000) -> ArtifactMeta:
    (folder / "model").mkdir()
    (folder / "model" / "weights.bin").write_bytes(payload)
    (folder / "model" / "graph.pb").write_bytes(b"graph")
    return artifacts.finish(folder, ArtifactMeta(format="saved_model", step="test", model_path="model", config_hash="c"))


@pytest.fixture(params=["local", "s3"])
def base_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3")
    return f"s3://{bucket}/runs"


def test_staged_artifact_round_trip_with_hashes(base_uri):
    uri = storage.join(base_uri, "a1")
    with storage.staged_output(uri) as folder:
        make_artifact(folder)
    with artifacts.open_artifact(uri) as (local, meta):
        assert (local / "model" / "weights.bin").read_bytes() == b"weights" * 1000
        assert set(meta.files) == {"model/weights.bin", "model/graph.pb"}
        assert meta.metrics["size_bytes"] == 7000 + 5
        assert meta.metrics["size_gzip_bytes"] < meta.metrics["size_bytes"]


def test_failure_inside_the_step_leaves_nothing_at_the_output(base_uri):
    uri = storage.join(base_uri, "a2")
    with pytest.raises(RuntimeError), storage.staged_output(uri) as folder:
        make_artifact(folder)
        raise RuntimeError("killed mid-step")
    assert not storage.exists(uri)
    with pytest.raises(UserError, match="not found"):
        artifacts.read_meta(uri)


def test_existing_output_needs_overwrite_and_overwrite_replaces(base_uri):
    uri = storage.join(base_uri, "a3")
    with storage.staged_output(uri) as folder:
        make_artifact(folder, b"old")
    with pytest.raises(UserError, match="already exists; pass --overwrite"), storage.staged_output(uri) as folder:
        pass
    with storage.staged_output(uri, overwrite=True) as folder:
        (folder / "extra.txt").write_text("x")
        make_artifact(folder, b"new")
    with artifacts.open_artifact(uri) as (local, meta):
        assert (local / "model" / "weights.bin").read_bytes() == b"new"
        assert "extra.txt" in meta.files


def test_tampered_file_is_detected(base_uri, tmp_path):
    uri = storage.join(base_uri, "a4")
    with storage.staged_output(uri) as folder:
        make_artifact(folder)
    storage.write_bytes(storage.join(uri, "model", "weights.bin"), b"tampered")
    with pytest.raises(UserError, match="does not match its sha256"), artifacts.open_artifact(uri):
        pass


def test_folder_without_marker_is_not_an_artifact(base_uri):
    uri = storage.join(base_uri, "a5")
    storage.write_bytes(storage.join(uri, "model", "weights.bin"), b"half")
    with pytest.raises(UserError, match="not a complete ModelPress artifact"):
        artifacts.read_meta(uri)


def test_unreadable_artifact_json(base_uri):
    uri = storage.join(base_uri, "a6")
    storage.write_bytes(storage.join(uri, "artifact.json"), b"{not json")
    with pytest.raises(UserError, match="unreadable"):
        artifacts.read_meta(uri)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from modelpress.io import artifacts
    from modelpress.io import storage
    from modelpress.io.artifacts import ArtifactMeta

    uri, kill_after = sys.argv[1], int(sys.argv[2])
    client = storage.s3_client()
    calls = {"n": 0}
    def counting(method):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return method(*args, **kwargs)
        return wrapped
    client.upload_file = counting(client.upload_file)
    client.copy = counting(client.copy)
    with storage.staged_output(uri, overwrite=True) as folder:
        for i in range(4):
            (folder / f"part{i}.bin").write_bytes(os.urandom(2048))
        artifacts.finish(folder, ArtifactMeta(format="raw", step="kill", model_path="part0.bin", config_hash="c"))
    print("done")
    """
)


def test_sigkill_at_every_write_never_exposes_a_half_artifact(s3, tmp_path):
    """5 files = 5 uploads to staging + 5 server-side copies: kill after each of them, then re-run to completion."""
    uri = f"s3://{s3}/runs/killed"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    for kill_after in range(10):
        result = subprocess.run([sys.executable, str(script), uri, str(kill_after)], capture_output=True, text=True)
        assert result.returncode == -9, result.stderr
        with pytest.raises(UserError):
            artifacts.read_meta(uri)
    result = subprocess.run([sys.executable, str(script), uri, "1000"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with artifacts.open_artifact(uri) as (_, meta):
        assert len(meta.files) == 4


def test_missing_bucket_is_one_clear_line(s3):
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        storage.check_output("s3://no-such-bucket/run", overwrite=False)


def test_unreachable_endpoint_is_one_clear_line(s3):
    from modelpress.contract.schema import StorageSettings

    storage.configure(StorageSettings(endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b"))
    with pytest.raises(UserError, match="cannot reach the S3 endpoint"):
        storage.exists(f"s3://{s3}/x")


def test_local_staging_leaves_no_hidden_folders(tmp_path):
    uri = str(tmp_path / "out")
    with storage.staged_output(uri) as folder:
        make_artifact(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_s3_staging_prefix_is_removed(s3):
    uri = f"s3://{s3}/runs/clean"
    with storage.staged_output(uri) as folder:
        make_artifact(folder)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3)["Contents"]]
    assert all(k.startswith("runs/clean/") for k in keys), keys
    assert json.loads(storage.read_bytes(f"{uri}/artifact.json"))["format"] == "saved_model"
