"""What the tests of both adapters share, importing neither orchestrator: .venv runs the Kubeflow side and
.venv-airflow the Airflow side (test_airflow_*.py), so a case both must pass is written once here."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelpress.cli.main import main
from tests.conftest import ROOT

# One workflow that uses every registered step; a newly registered step must be added here (the test says so).
ALL_STEPS = """\
name: all-steps
model: {zoo: mlp, params: {hidden: [32]}}
data: {source: digits}
tune: {space: {learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}}}
compress:
  - {technique: prune, sparsity: 0.5}
  - {technique: cluster}
  - {technique: quantize}
  - {technique: distill, student: {zoo: mlp, params: {hidden: [16]}}}
targets: [saved_model, tflite_fp32, onnx]
push: {uri: s3://models/registry}
serving: {base_path: s3://models/serving}
"""
# Targets of every image: tf (TFLite, ONNX), openvino, and tensorrt on the GPU pool; each image its own fan-out.
MIXED_TARGETS = """\
name: mixed-targets
model: {zoo: mlp, params: {hidden: [32]}}
data: {source: digits}
targets: [saved_model, tflite_int8, onnx, openvino_int8, tensorrt_fp16]
push: {uri: s3://models/registry}
"""
# A search replaces compress, so its steps (search, select) have a workflow of their own: rungs with and without
# Keras steps, a conversion fanned out per rung, push and deploy of the selection.
SEARCH = """\
name: search
model: {zoo: mlp, params: {hidden: [32]}}
data: {source: digits}
targets: [saved_model, onnx]
search:
  target: {min_speedup: 2, format: saved_model}
  ladder:
    - {name: ptq, compress: [{technique: quantize, mode: int8}]}
    - {name: pruned, compress: [{technique: prune, sparsity: 0.5}, {technique: quantize, mode: pqat}]}
push: {uri: s3://models/registry}
serving: {base_path: s3://models/serving}
"""
WORKFLOWS = {"all_steps": ALL_STEPS, "mixed_targets": MIXED_TARGETS, "search": SEARCH} | {
    p.stem: p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml"))
}

BAD_WORKFLOWS = {
    "unknown step": (
        "compress: [{technique: sparsify}]\n",
        "line 5: compress.0.technique: unknown technique 'sparsify'; choose one of prune, cluster, quantize, distill",
    ),
    "bad schedule": (
        'schedule: "*/5 * * *"\n',
        "line 5: schedule: schedule '*/5 * * *' has 4 fields; write a preset (@daily) or cron 'minute hour day month weekday'",
    ),
    "unknown key": ("gates: {min_acuracy: 0.9}\n", "line 5: gates: unknown key 'min_acuracy'; did you mean 'min_accuracy'?"),
    "cycle": (
        "compress:\n  - {technique: prune, from: cluster}\n  - {technique: cluster}\n",
        "line 6: compress[0] (prune): from makes a cycle: prune, which starts from cluster, which starts from prune; "
        "every model must lead back to train",
    ),
}
SECRET = "wJalrXUtnFEMI-K7MDENG-s3cr3t"
NO_IMAGE_CARRIES = "no image carries all of cuda, tf; add a set to DEPENDENCY_SETS"


def assert_bad_workflow_fails_compile_with_one_line(target: str, problem: str, capsys, tmp_path: Path) -> None:
    extra, message = BAD_WORKFLOWS[problem]
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmodel: {zoo: mlp}\ndata: {source: digits}\ntargets: [saved_model]\n" + extra)
    # The `modelpress` entry point in this process: the adapter is imported already (a subprocess per case is slow).
    code = main(["compile", target, str(path), "-o", str(tmp_path / "out" / ("p.yaml" if target == "kfp" else ""))])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"modelpress: error: {path} {message}"]
    assert not (tmp_path / "out").exists()  # nothing written


def assert_credentials_are_refused_and_never_echoed(target: str, capsys, tmp_path: Path) -> None:
    path = tmp_path / "creds.yaml"
    path.write_text(f"name: creds\nmodel: {{zoo: mlp}}\ndata: {{source: digits}}\nstorage: {{secret_access_key: {SECRET}}}\n")
    code = main(["compile", target, str(path), "-o", str(tmp_path / "out" / ("p.yaml" if target == "kfp" else ""))])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "storage.secret_access_key: a credential in the workflow" in err and "'modelpress-s3'" in err
    assert SECRET not in err and not (tmp_path / "out").exists()


def multi_worker_workflow(adapter_workflow, workers: int, folder: Path | None = None, operator: str = "tfjob") -> Path:
    """The adapter tests' tiny workflow, training with `workers` workers on the given training operator."""
    path = adapter_workflow("mw", targets="[saved_model]", folder=folder)
    spec = yaml.safe_load(path.read_text())
    spec["train"]["workers"] = workers
    spec["kubernetes"] = {"training_operator": operator}
    path.write_text(yaml.safe_dump(spec))
    return path


def replica_arguments(manifest: dict) -> dict[str, list[str]]:
    return {kind: r["template"]["spec"]["containers"][0]["args"] for kind, r in manifest["spec"]["tfReplicaSpecs"].items()}


def draft_every_template(cli, drafts: Path) -> dict[str, Path]:
    """`modelpress new` of every template into `drafts`: template -> the workflow it wrote (named my-<template>)."""
    from modelpress.cli.newflow import TEMPLATES

    written = {}
    for template in TEMPLATES:
        name = f"my-{template}"
        result = cli("new", name, "--from", template, "-o", str(drafts))
        assert result.returncode == 0, result.stderr
        path = drafts / f"{name}.yaml"
        assert result.stdout.strip() == f"wrote {path}; next: modelpress check {path}"
        text = path.read_text()
        assert text.startswith(f"# {name}: ") and yaml.safe_load(text)["name"] == name
        written[template] = path
    return written


def uses_builder(path: Path) -> bool:
    """A template whose model comes from the team's own package: the stock images cannot run it."""
    return bool(yaml.safe_load(path.read_text())["model"].get("builder"))


def with_image_tag(path: Path) -> None:
    """Uncomment the template's kubernetes.image_tag, where the derived images' tag goes (the template says so)."""
    text = path.read_text()
    assert "# kubernetes:\n#   image_tag: " in text
    path.write_text(text.replace("# kubernetes:\n#   image_tag: ", "kubernetes:\n  image_tag: "))


# A small search both adapters' Katib tests compile (with `kubernetes: {tuner: katib}` it becomes an Experiment).
KATIB_TUNE = """tune:
  max_trials: 4
  epochs: 2
  space:
    learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}
    optimizer: [adam, sgd]
"""
