"""What the orchestrators' UIs show of a task that ran: its output's identity and lineage, a release's metrics.
(tests/kfp/test_compiler.py reads them back from a kfp.local run.)"""

from __future__ import annotations

from modelpress.execution.outputs import task_outputs
from modelpress.io.artifacts import ArtifactMeta, content_digest, finish


def test_a_model_output_shows_its_format_digest_size_and_lineage_read_from_artifact_json(tmp_path):
    folder = tmp_path / "tflite_fp32"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(b"\x00" * 1000)
    meta = finish(folder, ArtifactMeta(format="tflite_fp32", step="convert", model_path="model.tflite", config_hash="c",
                                       parent="s3://runs/1/artifacts/train", data_hash="d" * 64))  # fmt: skip

    metrics, metadata = task_outputs("convert", str(folder), {"uri": str(folder), "metrics": {"seconds": 1.5, "ops": [1]}})
    assert metrics == {"seconds": 1.5}
    assert metadata == {
        "format": "tflite_fp32", "digest": content_digest(folder, meta), "data_hash": "d" * 64,
        "parent": "s3://runs/1/artifacts/train", "size_bytes": 1000,
    }  # fmt: skip


def test_a_push_shows_the_release_it_published_and_counts_its_artifacts(tmp_path):
    result = {
        "uri": str(tmp_path), "model": "digits", "version": 3, "digest": "e" * 64, "registry": "s3://models/registry",
        "version_uri": "s3://models/registry/digits/3", "published": ["train", "tflite_int8"], "rejected": ["onnx"],
    }  # fmt: skip
    metrics, metadata = task_outputs("push", str(tmp_path), result)
    assert metrics == {"version": 3, "artifacts": 2, "rejected": 1}
    release = {"model": "digits", "version": 3, "registry": "s3://models/registry", "uri": "s3://models/registry/digits/3"}
    assert metadata == {"release": release, "digest": "e" * 64}


def test_a_deploy_shows_the_version_it_serves():
    metrics, metadata = task_outputs("deploy", "/runs/1/serving/deploy", {"model": "digits", "version": 3, "reused": False})
    assert (metrics, metadata) == ({"version": 3}, {"release": {"model": "digits", "version": 3}})


def test_a_search_selection_shows_its_artifact_the_target_metrics_and_the_table(tmp_path):
    from modelpress.steps.select.config import SelectConfig
    from modelpress.steps.select.step import run
    from tests.search_validations import spec, write_validation

    validations = [write_validation(tmp_path, "train", "saved_model"), write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=5_000)]
    output = str(tmp_path / "validation" / "select")
    result = run(SelectConfig(search=spec({"max_size_ratio": 0.5})), {"validations": validations}, output)
    metrics, metadata = task_outputs("select", output, result)
    assert (metrics["target_met"], metrics["rungs_tried"], metrics["rungs_skipped"], metrics["size_gzip_bytes"]) == (1, 1, 1, 5_000)
    assert (metadata["name"], metadata["blessed"]) == ("ptq-tflite_int8", True)
    assert metadata["search"]["verdict"].startswith("ptq-tflite_int8 (rung ptq: quantize(mode=int8)) meets the target")
    assert [(r["rung"], r["artifact"], r["met"], r["skipped"]) for r in metadata["search"]["rows"]] == [
        ("train", "train", False, False), ("ptq", "ptq-tflite_int8", True, False), ("qat", None, False, True),
    ]  # fmt: skip
