"""push and the registry on a real S3 endpoint (moto's server over HTTP), driven through the `modelpress` CLI."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from modelpress.common.errors import UserError
from modelpress.io import releases, storage
from tests.conftest import start_moto

pytestmark = pytest.mark.integration


def push_config(registry: str, **push) -> str:
    return json.dumps({"push": {"uri": registry, "model_name": "tiny", **push}, "workflow_hash": "f" * 64})


def push(cli, registry: str, validations: list, output: str, env: dict | None = None, **settings):
    inputs = [arg for uri in validations for arg in ("--input", f"validations={uri}")]
    return cli("step", "push", "--config", push_config(registry, **settings), *inputs, "--output", output, env=env)


def objects(bucket: str, prefix: str = "") -> dict[str, tuple[str, object]]:
    """key -> (ETag, LastModified) of every object under the prefix."""
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing.get("Contents", [])}


def read_json(bucket: str, key: str) -> dict:
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def assert_complete_bundle(bucket: str, version: int = 1) -> dict:
    """Version `version` holds exactly the manifest's files, each with its recorded sha256 and size; its manifest."""
    prefix = f"registry/tiny/{version}/"
    manifest = read_json(bucket, f"{prefix}manifest.json")
    assert set(objects(bucket, prefix)) == {f"{prefix}{p}" for p in [*manifest["files"], "manifest.json", "MODEL_CARD.md"]}
    client = boto3.client("s3")
    for path, entry in manifest["files"].items():
        body = client.get_object(Bucket=bucket, Key=f"{prefix}{path}")["Body"].read()
        assert (hashlib.sha256(body).hexdigest(), len(body)) == (entry["sha256"], entry["size"]), path
    return manifest


def validations_of(run) -> list[str]:
    return [str(run / "validation" / "train"), str(run / "validation" / "tflite_fp32")]


def test_push_uploads_a_complete_bundle_that_the_registry_lists(s3, trained_runs, cli):
    registry = f"s3://{s3}/registry"
    result = push(cli, registry, validations_of(trained_runs["a"]), f"s3://{s3}/runs/1/push")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["version"], record["reused"], record["published"]) == (1, False, ["train", "tflite_fp32"])

    manifest = assert_complete_bundle(s3)
    assert {"artifacts/train/saved_model/saved_model.pb", "artifacts/tflite_fp32/model.tflite",
            "validation/train/golden.npz", "validation/train/blessing.json"} <= set(manifest["files"])
    client = boto3.client("s3")

    blessing = json.loads((trained_runs["a"] / "validation" / "train" / "blessing.json").read_text())
    train = next(e for e in manifest["artifacts"] if e["name"] == "train")
    assert train["metrics"]["accuracy"] == blessing["metrics"]["accuracy"]
    assert (train["format"], manifest["serving_artifact"], manifest["rejected"]) == ("saved_model", "train", [])
    lineage = manifest["lineage"]
    assert lineage["data_hash"] == blessing["data_hash"]
    assert lineage["workflow_hash"] == "f" * 64
    assert lineage["parents"]["tflite_fp32"] == str(trained_runs["a"] / "artifacts" / "train")
    assert {"modelpress", "tensorflow", "boto3"} <= set(lineage["libraries"])
    assert len(lineage["git_commit"]) == 40
    assert read_json(s3, "registry/tiny/labels/current.json")["version"] == 1

    card = client.get_object(Bucket=s3, Key="registry/tiny/1/MODEL_CARD.md")["Body"].read().decode()
    assert f"| train | saved_model | {blessing['metrics']['accuracy']:.4f} |" in card
    assert "| tflite_fp32 | tflite_fp32 |" in card

    listing = cli("registry", "list", "tiny", "--uri", registry)
    assert listing.returncode == 0, listing.stderr
    (row,) = listing.stdout.splitlines()[1:]
    assert row.split()[0] == "1" and row.endswith("current") and f"{blessing['metrics']['accuracy']:.4f}" in row
    shown = cli("registry", "show", "tiny", "1", "--uri", registry)
    assert json.loads(shown.stdout) == manifest
    missing = cli("registry", "show", "tiny", "7", "--uri", registry)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"modelpress: error: model 'tiny' has no version 7 in {registry}; its versions: 1"


def test_same_bundle_is_a_no_op_new_content_is_the_next_version_and_versions_never_change(s3, trained_runs, cli):
    registry = f"s3://{s3}/registry"
    assert push(cli, registry, validations_of(trained_runs["a"]), f"s3://{s3}/runs/1/push").returncode == 0
    first = objects(s3, "registry/tiny/1/")

    again = push(cli, registry, validations_of(trained_runs["a"]), f"s3://{s3}/runs/2/push")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["version"], json.loads(again.stdout)["reused"]) == (1, True)
    assert "already version 1" in again.stderr
    assert objects(s3, "registry/tiny/1/") == first  # not one object rewritten

    other = push(cli, registry, validations_of(trained_runs["b"]), f"s3://{s3}/runs/3/push")
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["version"] == 2
    assert releases.list_versions(registry, "tiny") == [1, 2]
    current = read_json(s3, "registry/tiny/labels/current.json")
    assert (current["version"], current["history"]) == (2, [1])

    before = objects(s3)
    pinned = push(cli, registry, validations_of(trained_runs["b"])[:1], f"s3://{s3}/runs/4/push", version=1)
    assert pinned.returncode == 2
    assert "modelpress: error: version 1 of 'tiny' already exists with different content" in pinned.stderr
    assert "versions never change: unset push.version" in pinned.stderr
    assert objects(s3) == before


def test_unblessed_artifacts_are_never_pushed(s3, trained_runs, cli):
    registry = f"s3://{s3}/registry"
    unblessed = str(trained_runs["unblessed"])
    alone = push(cli, registry, [unblessed], f"s3://{s3}/runs/1/push")
    # The task driver skips a publishing task whose validations all refused (as every orchestrator does), saying why.
    assert alone.returncode == 0 and json.loads(alone.stdout)["skipped"] is True
    reason = json.loads(alone.stdout)["reason"]
    assert reason.startswith("no validation it reads blessed its model; nothing to publish (train: accuracy ")
    assert "is below min_accuracy 0.9990" in reason
    assert set(objects(s3)) == {"runs/1/push/skipped.json"}  # the skip marker; nothing in the registry

    strict = push(cli, registry, [unblessed, str(trained_runs["b"] / "validation" / "tflite_fp32")],
                  f"s3://{s3}/runs/2/push", require_all_blessed=True)
    assert strict.returncode == 2
    assert "push refused: not every artifact is blessed (train: accuracy" in strict.stderr
    assert set(objects(s3)) == {"runs/1/push/skipped.json"}

    mixed = push(cli, registry, [unblessed, str(trained_runs["b"] / "validation" / "tflite_fp32")], f"s3://{s3}/runs/3/push")
    assert mixed.returncode == 0, mixed.stderr
    assert "not pushing train: accuracy" in mixed.stderr
    manifest = read_json(s3, "registry/tiny/1/manifest.json")
    assert [e["name"] for e in manifest["artifacts"]] == ["tflite_fp32"]
    assert manifest["rejected"][0]["name"] == "train" and "min_accuracy" in manifest["rejected"][0]["reasons"][0]
    assert manifest["serving_artifact"] is None
    assert not [k for k in objects(s3, "registry/tiny/1/") if "/train/" in k]


def test_missing_bucket_is_one_clear_line(s3, trained_runs, cli):
    result = push(cli, "s3://no-such-bucket-mp/registry", validations_of(trained_runs["a"]), f"s3://{s3}/runs/1/push")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "modelpress: error: bucket 'no-such-bucket-mp' does not exist (s3://no-such-bucket-mp/registry); create it or fix the URI")
    assert objects(s3) == {}


# Reading only. (AWS checks s3:ListBucket for HeadBucket; moto checks an action it names s3:HeadBucket.)
READ_ONLY_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"],
    "Resource": ["arn:aws:s3:::models", "arn:aws:s3:::models/*"]}]}


@pytest.fixture(scope="module")
def authenticating_s3():
    """A second moto server that checks credentials and IAM policies after its first 4 requests, which create the
    bucket `models` and a user allowed to read it but not to write. Yields the endpoint and that user's keys."""
    process, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    settings = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    boto3.client("s3", **settings).create_bucket(Bucket="models")
    iam = boto3.client("iam", **settings)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(READ_ONLY_POLICY))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    yield endpoint, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("credentials", ["unknown", "read-only"])
def test_bad_credentials_are_one_clear_line(trained_runs, cli, authenticating_s3, tmp_path, credentials):
    endpoint, reader = authenticating_s3
    keys = reader if credentials == "read-only" else {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1", "AWS_SECRET_ACCESS_KEY": "wrong"}
    result = push(cli, "s3://models/registry", validations_of(trained_runs["a"]), str(tmp_path / "push"),
                  env={"AWS_ENDPOINT_URL": endpoint, **keys})
    assert result.returncode == 2
    # the first write of a push is its bundle claim
    code, where = ("AccessDenied", "s3://models/registry/tiny/claims/bundle-[0-9a-f]{64}") if credentials == "read-only" else ("403", "s3://models/registry")
    assert re.fullmatch(
        rf"modelpress: error: S3 refused access to {where} \({code}\); check the credentials and the bucket policy", result.stderr.strip()
    ), result.stderr
    assert not (tmp_path / "push").exists()


def test_validate_gates_a_new_model_against_the_published_one(s3, trained_runs, cli, tmp_path):
    registry = f"s3://{s3}/registry"
    assert push(cli, registry, validations_of(trained_runs["a"]), f"s3://{s3}/runs/1/push").returncode == 0
    published = json.loads((trained_runs["a"] / "validation" / "train" / "blessing.json").read_text())["metrics"]
    weaker = json.loads((trained_runs["b"] / "validation" / "train" / "blessing.json").read_text())["metrics"]
    assert published["accuracy"] - weaker["accuracy"] > 0.05
    config = {"name": "train", "data": {"source": "digits"}, "gates": {"max_drop_vs_serving": 0.05},
              "evaluation": {"latency_runs": 5}, "push": {"uri": registry, "model_name": "tiny"}}
    result = cli("step", "validate", "--config", json.dumps(config), "--input", f"model={trained_runs['b'] / 'artifacts/train'}",
                 "--output", str(tmp_path / "validation"))
    assert result.returncode == 0, result.stderr
    blessing = json.loads((tmp_path / "validation" / "blessing.json").read_text())
    assert not blessing["blessed"]
    assert blessing["metrics"]["serving_accuracy"] == pytest.approx(published["accuracy"])
    assert blessing["serving"] == {"version": 1, "name": "train", "accuracy": pytest.approx(published["accuracy"]), "source": "measured"}
    drop = published["accuracy"] - weaker["accuracy"]
    assert blessing["reasons"] == [
        f"accuracy drop {drop * 100:.2f} pp vs published train version 1 (measured) exceeds max_drop_vs_serving 5.00 pp"]


@contextlib.contextmanager
def flaky_proxy(endpoint: str, faults: list[str]):
    """An HTTP proxy in front of the S3 server that answers the first PUTs with the given faults, in order:
    "slowdown" (503 SlowDown, S3's throttling answer), "error" (500 InternalError) or "reset" (connection dropped
    without an answer). Everything else is forwarded as is. Yields the proxy's URL; `faults` empties as they happen."""
    upstream = urllib.parse.urlsplit(endpoint)
    answers = {"slowdown": (503, "SlowDown", "Please reduce your request rate."),
               "error": (500, "InternalError", "We encountered an internal error. Please try again.")}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fault = faults.pop(0) if self.command == "PUT" and faults else None
            if fault == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault:
                status, code, message = answers[fault]
                payload = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            connection.request(self.command, self.path, body, dict(self.headers))
            response = connection.getresponse()
            payload = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(name, value)
            self.send_header("Content-Length", response.getheader("Content-Length") or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            connection.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_throttling_server_errors_and_dropped_connections_are_retried(s3, s3_endpoint, trained_runs, cli):
    faults = ["slowdown", "reset", "error"]
    with flaky_proxy(s3_endpoint, faults) as proxy:
        result = push(cli, f"s3://{s3}/registry", validations_of(trained_runs["a"]), f"s3://{s3}/runs/1/push",
                      env={"AWS_ENDPOINT_URL": proxy})
    assert result.returncode == 0, result.stderr
    assert faults == []  # every fault was met
    assert_complete_bundle(s3)
    assert read_json(s3, "registry/tiny/labels/current.json")["version"] == 1


def test_two_pushes_at_the_same_time_never_share_a_version(s3, trained_runs, cli):
    registry = f"s3://{s3}/registry"
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda run: push(cli, registry, validations_of(trained_runs[run]), f"s3://{s3}/runs/{run}/push"), "ab"))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sorted(json.loads(r.stdout)["version"] for r in results) == [1, 2]
    digests = {json.loads(r.stdout)["digest"] for r in results}
    assert {assert_complete_bundle(s3, version)["digest"] for version in (1, 2)} == digests and len(digests) == 2


def test_a_push_of_models_another_run_is_publishing_waits_and_reuses_its_version(s3, trained_runs, cli, capsys):
    """The bundle claim: a second push of the same models waits for the holder, then finds the holder's version."""
    from modelpress.steps.push.config import PushConfig
    from modelpress.steps.push.step import run as push_in_process

    registry, validations = f"s3://{s3}/registry", validations_of(trained_runs["a"])
    probe = push(cli, f"s3://{s3}/probe", validations, f"s3://{s3}/runs/probe/push")
    digest = json.loads(probe.stdout)["digest"]
    storage.create_exclusive(releases.bundle_claim_uri(registry, "tiny", digest), json.dumps({"run_id": "holder", "claimed": 0}).encode())

    def push_as(run_id: str) -> dict:
        config = PushConfig(push={"uri": registry, "model_name": "tiny"}, run_id=run_id)
        return push_in_process(config, {"validations": validations}, f"s3://{s3}/runs/{run_id}/push")

    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(push_as, "waiting")
        seen, deadline = "", time.monotonic() + 60
        while "run holder is publishing the same models; waiting for it" not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
            seen += capsys.readouterr().err
        assert "waiting for it" in seen and not waiting.done() and releases.list_versions(registry, "tiny") == []
        assert push_as("holder")["version"] == 1  # the holder publishes and gives its claim back
        record = waiting.result(timeout=120)
    assert (record["version"], record["reused"]) == (1, True)
    assert releases.list_versions(registry, "tiny") == [1] and releases.bundle_claims(registry, "tiny") == []


def test_a_dead_runs_claims_time_out_with_a_hint_and_registry_gc_removes_them(s3, trained_runs, cli):
    registry, validations = f"s3://{s3}/registry", validations_of(trained_runs["a"])
    digest = json.loads(push(cli, f"s3://{s3}/probe", validations, f"s3://{s3}/runs/probe/push").stdout)["digest"]
    dead = {"run_id": "dead-run", "claimed": time.time() - 7200}
    storage.create_exclusive(releases.bundle_claim_uri(registry, "tiny", digest), json.dumps(dead).encode())
    storage.create_exclusive(releases.claim_uri(registry, "tiny", 1), json.dumps({**dead, "digest": digest}).encode())
    with pytest.raises(UserError, match=r"run dead-run has been publishing these models of 'tiny' .* for over 1s; .*"
                                        r"modelpress registry gc tiny --delete"):
        with releases.bundle_claim(registry, "tiny", digest, "new-run", timeout_s=1):
            pass
    listed = cli("registry", "gc", "tiny", "--uri", registry)
    assert listed.returncode == 0, listed.stderr
    kinds = sorted(line.split("  ")[0].strip() for line in listed.stdout.splitlines() if line.startswith(("claim", "bundle")))
    assert kinds == ["bundle claim", "claim"] and "2 item(s); dry run" in listed.stdout
    assert releases.bundle_claims(registry, "tiny") == [digest]  # a dry run removes nothing
    assert cli("registry", "gc", "tiny", "--uri", registry, "--delete").returncode == 0
    assert releases.bundle_claims(registry, "tiny") == [] and releases.claimed_versions(registry, "tiny") == []
    result = push(cli, registry, validations, f"s3://{s3}/runs/new/push")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1 and releases.bundle_claims(registry, "tiny") == []


def test_model_card_rounds_accuracies_sizes_and_latencies():
    from modelpress.steps.push.step import model_card

    accuracy = 0.8527777777777777
    metrics = {"accuracy": accuracy, "drop": 0.0138888888888889, "agreement": 0.9861111111111112, "params": 2410,
               "size_bytes": 3_456_789, "size_gzip_bytes": 10_555, "latency_ms_p50": 0.0412345678, "latency_ms_p95": 12.3456789,
               "throughput_per_s": 40211.7, "threads": 4}  # fmt: skip
    gates = [{"gate": "min_accuracy", "passed": True, "value": accuracy}, {"gate": "max_latency_ms", "passed": True, "value": 12.3456789},
             {"gate": "max_size_bytes", "passed": True, "value": 3_456_789}]  # fmt: skip
    manifest = {
        "created": "2025-01-02T03:04:05Z", "digest": "a" * 64, "serving_artifact": "train", "rejected": [],
        "artifacts": [{"name": "train", "format": "saved_model", "path": "artifacts/train", "gates": gates,
                       "thresholds": {"min_accuracy": 0.6, "max_latency_ms": 20.0, "max_size_bytes": 4_194_304}}],
        "lineage": {"data_hash": "d" * 64, "calibration_hashes": [], "workflow_hash": None, "git_commit": None, "libraries": {}},
    }  # fmt: skip
    blessing = {"name": "train", "format": "saved_model", "blessed": True, "reasons": [], "metrics": metrics}
    card = model_card("tiny", 1, manifest, [blessing])
    assert "| train | saved_model | 0.8528 | +1.39 | 0.9861 | 2,410 | 3.30 MiB | 10.3 KiB | 0.0412 | 12.3 | 40,212 | 4 | yes |" in card
    assert "min_accuracy 0.6000, max_latency_ms 20.0 ms, max_size_bytes 4.00 MiB" in card
    assert "- **train** (saved_model): min_accuracy passed (0.8528), max_latency_ms passed (12.3 ms), max_size_bytes passed (3.30 MiB)" in card
    assert "77777" not in card and "456789" not in card
