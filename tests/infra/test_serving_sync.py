"""The TF Serving sidecar (infra/base/tfserving/sync_models.py) against a real S3 endpoint (moto's server)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from modelpress.io import storage
from tests.conftest import ROOT

SCRIPT = ROOT / "infra" / "base" / "tfserving" / "sync_models.py"
BOOTSTRAP = ROOT / "infra" / "base" / "tfserving" / "models.config"
MODEL = "digits-mlp"


@pytest.fixture(scope="module")
def sync_models():
    spec = importlib.util.spec_from_file_location("sync_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_version(base: str, version: int, complete: bool) -> None:
    """A SavedModel version the way deploy leaves it: saved_model.pb is the last file to arrive."""
    folder = storage.join(base, MODEL, str(version))
    storage.write_bytes(storage.join(folder, "variables", "variables.index"), f"index {version}".encode())
    storage.write_bytes(storage.join(folder, "variables", "variables.data-00000-of-00001"), os.urandom(2048))
    if complete:
        storage.write_bytes(storage.join(folder, "saved_model.pb"), f"graph {version}".encode())


def deployed(base: str, config: str) -> None:
    storage.write_bytes(storage.join(base, "_modelpress", f"{MODEL}.json"), json.dumps({"model": MODEL, "stable": 1, "history": [1]}).encode())
    storage.write_bytes(storage.join(base, "models.config"), config.encode())


def test_nothing_deployed_yet_starts_from_the_bootstrap_config(s3, tmp_path, sync_models):
    base = f"s3://{s3}/serving"
    assert sync_models.sync_once(base, tmp_path, BOOTSTRAP) == ["models.config"]
    assert (tmp_path / "models.config").read_bytes() == BOOTSTRAP.read_bytes()
    assert sync_models.sync_once(base, tmp_path, BOOTSTRAP) == []


def test_only_complete_versions_arrive_and_each_arrives_whole(s3, tmp_path, sync_models):
    base = f"s3://{s3}/serving"
    write_version(base, 1, complete=True)
    write_version(base, 2, complete=False)  # a deploy still copying: no saved_model.pb yet
    config = f'model_config_list {{ config {{ name: "{MODEL}" base_path: "/models/{MODEL}" model_platform: "tensorflow" }} }}\n'
    deployed(base, config)
    (tmp_path / "models.config").write_bytes(BOOTSTRAP.read_bytes())  # what an earlier pass left

    assert sync_models.sync_once(base, tmp_path, BOOTSTRAP) == [f"{MODEL}/1", "models.config"]
    with storage.local_copy(storage.join(base, MODEL, "1")) as expected:
        for path in expected.rglob("*"):
            if path.is_file():
                assert (tmp_path / MODEL / "1" / path.relative_to(expected)).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (tmp_path / MODEL).iterdir()) == ["1"]  # no version 2, no staging leftovers
    assert (tmp_path / "models.config").read_text() == config
    assert sync_models.sync_once(base, tmp_path, BOOTSTRAP) == []

    storage.write_bytes(storage.join(base, MODEL, "2", "saved_model.pb"), b"graph 2")
    assert sync_models.sync_once(base, tmp_path, BOOTSTRAP) == [f"{MODEL}/2"]
    assert (tmp_path / MODEL / "2" / "saved_model.pb").read_bytes() == b"graph 2"


def test_the_sidecar_command_syncs_once_and_names_a_missing_source(s3, tmp_path):
    base = f"s3://{s3}/serving"
    write_version(base, 1, complete=True)
    deployed(base, "model_config_list {}\n")
    command = [sys.executable, str(SCRIPT), "--target", str(tmp_path), "--bootstrap", str(BOOTSTRAP)]
    done = subprocess.run(command, env={**os.environ, "MODELPRESS_SERVING_BASE": base}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"synced {MODEL}/1", "synced models.config"]
    environment = {k: v for k, v in os.environ.items() if k != "MODELPRESS_SERVING_BASE"}
    missing = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "MODELPRESS_SERVING_BASE" in missing.stderr.splitlines()[-1]
