"""`modelpress run` and `modelpress step` end to end on real digits, locally and on the S3 endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpress.io import artifacts, storage
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_tiny_workflow_writes_artifacts_blessings_and_report(cli, tiny_workflow, tmp_path):
    out = tmp_path / "run"
    tiny_workflow.write_text(tiny_workflow.read_text() + "gates: {min_accuracy: 0.99}\npush: {}\nserving: {}\n")
    result = cli("run", str(tiny_workflow), "--out", str(out))
    assert result.returncode == 0, result.stderr
    # Nothing blessed: push and deploy are skipped (the pipeline's dsl.If), nothing is published, the run still reports.
    assert "skipped push: no validation it reads blessed its model; nothing to publish" in result.stdout
    assert not (out / "registry").exists() and not (out / "serving").exists()
    assert "train epoch 3/3" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["artifacts"]
    assert row["name"] == "train" and row["format"] == "saved_model" and row["uri"] == str(out / "artifacts" / "train")
    for key in ("accuracy", "size_bytes", "size_gzip_bytes", "latency_ms_p50", "latency_ms_p95"):
        assert isinstance(row["metrics"][key], (int, float)), key
    # 3 epochs of a 32-unit MLP cannot reach 99%: the gate must reject it and say why.
    assert row["blessed"] is False and "below min_accuracy 0.9900" in row["reasons"][0]
    assert "NO" in result.stdout and "train" in result.stdout
    blessing = json.loads((out / "validation" / "train" / "blessing.json").read_text())
    assert blessing["gates"][0]["gate"] == "min_accuracy" and blessing["gates"][0]["passed"] is False
    evaluation = json.loads((out / "validation" / "train" / "evaluation.json").read_text())
    assert sum(map(sum, evaluation["confusion_matrix"])) == blessing["metrics"]["test_examples"]
    meta = json.loads((out / "artifacts" / "train" / "artifact.json").read_text())
    assert meta["format"] == "saved_model" and meta["step"] == "train" and len(meta["data_hash"]) == 64
    assert {"model.h5", "initial.weights.h5", "saved_model/saved_model.pb"} <= set(meta["files"])
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and "below min_accuracy" in html
    assert (out / "report.md").read_text().startswith("# ModelPress run: tiny")


def test_reference_workflow_reaches_95_percent_on_digits(cli, tmp_path):
    out = tmp_path / "demo"
    result = cli("run", str(ROOT / "examples" / "digits_mlp.yaml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    train = next(r for r in summary["artifacts"] if r["name"] == "train")
    assert train["metrics"]["accuracy"] >= 0.95 and train["blessed"]
    assert train["metrics"]["params"] == 8 * 8 * 300 + 300 + 300 * 150 + 150 + 150 * 10 + 10
    # The demo's whole path: pruned, converted, every artifact blessed, published and laid out for TF Serving.
    rows = {r["name"]: r for r in summary["artifacts"]}
    assert set(rows) == {"train", "prune", "tflite_int8", "openvino_int8", "onnx"}
    assert all(r["blessed"] for r in rows.values()), {n: r["reasons"] for n, r in rows.items()}
    assert json.loads((out / "artifacts" / "prune" / "artifact.json").read_text())["metrics"]["sparsity"] == 0.5
    assert rows["tflite_int8"]["metrics"]["size_gzip_bytes"] < train["metrics"]["size_gzip_bytes"] / 4
    assert (out / "registry" / "digits-mlp" / "1" / "manifest.json").is_file()
    assert (out / "serving" / "digits-mlp" / "1" / "saved_model.pb").is_file()
    assert "/models/digits-mlp" in (out / "serving" / "models.config").read_text()


def test_steps_on_s3_through_the_step_command(cli, s3, tmp_path):
    """What a container runs: train to s3://, validate from s3:// to s3://, results as JSON files."""
    train_uri, validation_uri = f"s3://{s3}/runs/7/train", f"s3://{s3}/runs/7/validate_train"
    config = {"model": {"zoo": "mlp", "params": {"hidden": [16]}}, "data": {"source": "digits"}, "train": {"epochs": 2}}
    result = cli("step", "train", "--config", json.dumps(config), "--output", train_uri, "--result", str(tmp_path / "t.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "t.json").read_text())["uri"] == train_uri
    meta = artifacts.read_meta(train_uri)
    assert meta.step == "train" and meta.metrics["params"] == 64 * 16 + 16 + 16 * 10 + 10
    (tmp_path / "v.json").write_text(json.dumps({"name": "train", "data": {"source": "digits"}, "evaluation": {"latency_runs": 5}}))
    result = cli(
        "step", "validate", "--config", f"@{tmp_path / 'v.json'}", "--input", f"model={train_uri}",
        "--output", validation_uri, "--result", str(tmp_path / "r.json"),
    )
    assert result.returncode == 0, result.stderr
    blessing = json.loads(storage.read_bytes(f"{validation_uri}/blessing.json"))
    assert blessing["blessed"] is True and blessing["artifact"] == train_uri
    assert json.loads(Path(tmp_path / "r.json").read_text())["metrics"]["accuracy"] == blessing["metrics"]["accuracy"]
    rerun = cli("step", "train", "--config", json.dumps(config), "--output", train_uri)
    assert rerun.returncode == 2 and "already exists" in rerun.stderr


def test_whole_run_into_s3(cli, s3, tiny_workflow):
    out = f"s3://{s3}/runs/tiny"
    result = cli("run", str(tiny_workflow), "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads(storage.read_bytes(f"{out}/summary.json"))
    assert summary["artifacts"][0]["uri"] == f"{out}/artifacts/train"
    assert storage.exists(f"{out}/report.html") and storage.exists(f"{out}/validation/train/blessing.json")


def test_a_push_bucket_that_does_not_exist_stops_the_run_before_training(cli, tiny_workflow, s3, tmp_path):
    tiny_workflow.write_text(tiny_workflow.read_text() + "push: {uri: s3://no-such-bucket-here/registry}\n")
    result = cli("run", str(tiny_workflow), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("modelpress: error: push.uri s3://no-such-bucket-here/registry does not accept a write:")
    assert "train epoch" not in result.stderr and not (tmp_path / "run").exists()  # found before any training


def test_a_serving_path_that_cannot_be_written_stops_the_run_before_training(cli, tiny_workflow, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    tiny_workflow.write_text(tiny_workflow.read_text() + f"serving: {{base_path: {blocker}/serving}}\n")
    result = cli("run", str(tiny_workflow), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"serving.base_path {blocker}/serving does not accept a write" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_target_whose_runtime_is_missing_is_refused_unless_it_may_skip(tiny_workflow, monkeypatch):
    from modelpress.common.errors import UserError
    from modelpress.execution import runner
    from modelpress.execution.plan import build_plan, load_workflow

    monkeypatch.setitem(runner.EXTRA_MODULES, "openvino", ("openvino_not_installed_here",))  # as where it is absent
    tiny_workflow.write_text(tiny_workflow.read_text() + "targets: [saved_model, openvino_fp32]\n")
    with pytest.raises(UserError, match=r"target openvino_fp32 needs openvino_not_installed_here, which is not installed here: pip install 'modelpress\[openvino\]'"):
        runner.check_runtimes(build_plan(load_workflow(tiny_workflow)))
    tiny_workflow.write_text(tiny_workflow.read_text().replace("openvino_fp32]", "{format: openvino_fp32, on_unavailable: skip}]"))
    runner.check_runtimes(build_plan(load_workflow(tiny_workflow)))  # a target that may skip is not a preflight error
