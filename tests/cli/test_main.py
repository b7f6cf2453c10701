"""The `modelpress` command as a user reads it: the examples --help prints work, and listings line up."""

from __future__ import annotations

import json
import re
import shlex

import boto3
import pytest

pytestmark = pytest.mark.integration

TINY_TRAIN_CONFIG = {"model": {"zoo": "mlp", "params": {"hidden": [8]}}, "data": {"source": "digits"}, "train": {"epochs": 1}}


def test_the_step_example_of_modelpress_help_runs_on_a_config_file(cli, s3, s3_endpoint, tmp_path):
    """The example is run exactly as printed, in a folder holding the cfg.json it names, against the bucket it names."""
    result = cli("--help")
    (example,) = [line.strip().split("  ")[0] for line in result.stdout.splitlines() if "modelpress step train" in line]
    assert example == "modelpress step train --config @cfg.json --output s3://bucket/runs/1/train"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="bucket")
    for key in [o["Key"] for o in client.list_objects_v2(Bucket="bucket").get("Contents", [])]:
        client.delete_object(Bucket="bucket", Key=key)
    (tmp_path / "cfg.json").write_text(json.dumps(TINY_TRAIN_CONFIG))
    ran = cli(*shlex.split(example)[1:], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["uri"] == "s3://bucket/runs/1/train"
    client.head_object(Bucket="bucket", Key="runs/1/train/artifact.json")


def test_a_config_file_named_without_its_at_sign_is_one_line_naming_the_fix(cli, tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps(TINY_TRAIN_CONFIG))
    result = cli("step", "train", "--config", "cfg.json", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "modelpress: error: --config cfg.json is a file name, not JSON; write --config @cfg.json to read the file"
    assert not (tmp_path / "out").exists()


def test_the_step_help_examples_name_files_with_an_at_sign(cli):
    examples = [line for line in cli("step", "--help").stdout.splitlines() if line.startswith("  modelpress step") and "--config" in line]
    assert examples and all(re.search(r"--config (@\S+|'\{.*\}')", line) for line in examples), examples


def publish(registry, version: int, created: str, artifacts: dict[str, float | None], labels: list[str]) -> None:
    folder = registry / "tiny" / str(version)
    folder.mkdir(parents=True)
    entries = [{"name": name, "metrics": {} if accuracy is None else {"accuracy": accuracy}} for name, accuracy in artifacts.items()]
    manifest = {"created": created, "digest": f"{version:x}" * 64, "serving_artifact": next(iter(artifacts)), "artifacts": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for label in labels:
        (registry / "tiny" / "labels").mkdir(exist_ok=True)
        (registry / "tiny" / "labels" / f"{label}.json").write_text(json.dumps({"version": version, "digest": manifest["digest"]}))


def test_registry_list_lines_its_columns_up(cli, tmp_path):
    registry = tmp_path / "registry"
    publish(registry, 9, "2025-01-02T03:04:05Z", {"train": 0.91234}, ["previous"])
    publish(registry, 10, "2025-01-09T03:04:05.123456Z", {"saved_model_with_a_long_name": 1.0, "tflite_fp32": 0.9, "onnx": 0.9}, ["current", "canary"])
    publish(registry, 11, "2025-01-10Z", {"train": None}, [])
    result = cli("registry", "list", "tiny", "--uri", str(registry))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert len(rows) == 3
    starts = [header.index(title) for title in ("created", "digest", "artifacts", "labels")]
    ends = [header.index(title) + len(title) for title in ("version", "accuracy")]  # numbers end where their title does
    for row, (version, accuracy) in zip(rows, [("9", "0.9123"), ("10", "1.0000"), ("11", "-")], strict=True):
        for start in starts[: 3 if row is rows[2] else 4]:  # version 11 has no labels: its line ends with artifacts
            assert row[start - 2 : start] == "  " and row[start] != " ", (row, start)
        assert row[: ends[0]].strip() == version
        assert row[: ends[1]].endswith(accuracy), row
    assert rows[1].endswith("canary, current") and rows[2].endswith("train")
