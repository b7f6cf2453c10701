"""Every user mistake: one clear line on stderr, a non-zero exit, no traceback, nothing overwritten."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_WORKFLOW

pytestmark = pytest.mark.integration


def assert_one_line_error(result, *phrases: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("modelpress: error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def workflow(tmp_path, text: str):
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return str(path)


def csv_workflow(tmp_path, rows: list[str], extra: str = "") -> str:
    (tmp_path / "d.csv").write_text("\n".join(["a,b,label", *rows]) + "\n")
    return workflow(
        tmp_path,
        f"name: t\nmodel: {{zoo: mlp, params: {{hidden: [8]}}}}\ndata:\n  source: csv\n  path: {tmp_path / 'd.csv'}\n{extra}",
    )


def test_misspelt_key(cli, tmp_path):
    result = cli("run", workflow(tmp_path, TINY_WORKFLOW.replace("epochs:", "epoch:")), "--out", str(tmp_path / "r"))
    assert_one_line_error(result, "line 8", "unknown key 'epoch'", "did you mean 'epochs'")
    assert not (tmp_path / "r").exists()


def test_wrong_type(cli, tmp_path):
    result = cli("check", workflow(tmp_path, TINY_WORKFLOW.replace("batch_size: 64", "batch_size: many")))
    assert_one_line_error(result, "train.batch_size", "'many'")


def test_missing_data_file(cli, tmp_path):
    path = workflow(tmp_path, "name: t\nmodel: {zoo: mlp}\ndata: {source: csv, path: /nowhere/d.csv}\n")
    assert_one_line_error(cli("run", path, "--out", str(tmp_path / "r")), "/nowhere/d.csv not found")


def test_empty_data_set(cli, tmp_path):
    assert_one_line_error(cli("run", csv_workflow(tmp_path, []), "--out", str(tmp_path / "r")), "no data rows")


def test_labels_out_of_range(cli, tmp_path):
    rows = [f"0.{i},0.5,{i % 2}" for i in range(20)] + ["0.1,0.2,5"]
    path = csv_workflow(tmp_path, rows, "  num_classes: 2\n")
    assert_one_line_error(cli("run", path, "--out", str(tmp_path / "r")), "label 5", "out of range 0..1")


def test_nan_in_data(cli, tmp_path):
    rows = [f"0.{i},0.5,{i % 2}" for i in range(20)] + ["nan,0.2,1"]
    assert_one_line_error(cli("run", csv_workflow(tmp_path, rows), "--out", str(tmp_path / "r")), "NaN")


def test_wrong_input_shape_for_the_model(cli, tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "import tf_keras as keras\n"
        "def build(input_shape, num_classes):\n"
        "    inputs = keras.Input((28, 28, 1))\n"
        "    x = keras.layers.Flatten()(inputs)\n"
        "    return keras.Model(inputs, keras.layers.Dense(num_classes, activation='softmax')(x))\n"
    )
    path = workflow(tmp_path, "name: t\nmodel: {builder: 'mymodels:build'}\ndata: {source: digits}\n")
    result = cli("run", path, "--out", str(tmp_path / "r"), env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(result, "expects inputs of shape (28, 28, 1)", "(8, 8, 1)")


def test_unknown_zoo_model(cli, tmp_path):
    assert_one_line_error(cli("check", workflow(tmp_path, TINY_WORKFLOW.replace("zoo: mlp", "zoo: vgg"))), "unknown zoo model 'vgg'")


def test_bad_builder_path(cli, tmp_path):
    path = workflow(tmp_path, "name: t\nmodel: {builder: 'no_such_module:build'}\ndata: {source: digits}\n")
    assert_one_line_error(cli("run", path, "--out", str(tmp_path / "r")), "cannot import module 'no_such_module'")


def test_unreadable_artifact(cli, tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "artifact.json").write_text("{broken")
    config = '{"name": "x", "data": {"source": "digits"}}'
    result = cli("step", "validate", "--config", config, "--input", f"model={tmp_path / 'art'}", "--output", str(tmp_path / "v"))
    assert_one_line_error(result, "artifact.json is unreadable")
    assert not (tmp_path / "v").exists()


def test_missing_bucket(cli, s3, tiny_workflow, s3_endpoint):
    result = cli("run", str(tiny_workflow), "--out", "s3://no-such-bucket/runs/x")
    assert_one_line_error(result, "bucket 'no-such-bucket' does not exist")


def test_output_exists_without_overwrite(cli, tmp_path, tiny_workflow):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    assert_one_line_error(cli("run", str(tiny_workflow), "--out", str(out)), "already exists; pass --overwrite")
    assert (out / "keep.txt").read_text() == "earlier run"


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["step", "trian", "--output", "x"], "unknown step 'trian'; did you mean 'train'?"),
        (["step", "train", "--config", "{oops", "--output", "x"], "--config is not valid JSON"),
        (["step", "validate", "--config", '{"name": "x", "data": {"source": "digits"}}', "--output", "x"], "needs --input model=URI"),
        (["step", "train", "--config", '{"model": {"zoo": "mlp"}, "data": {"source": "digits"}, "epochs": 3}', "--output", "x"],
         "unknown key 'epochs'"),
        (["step", "train", "--input", "model", "--output", "x"], "must be NAME=URI"),
    ],
)
def test_step_command_mistakes(cli, tmp_path, args, phrase):
    assert_one_line_error(cli(*args, env={"PWD": str(tmp_path)}), phrase)


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error():
    """`modelpress registry show ... | head` must not end in a BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before anything is written
    writer = subprocess.run(
        [sys.executable, "-m", "modelpress", "steps"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # every line is written at once, as on a terminal
    )
    os.close(write_end)
    assert writer.returncode == 0, writer.stderr
    assert "Traceback" not in writer.stderr and "BrokenPipeError" not in writer.stderr


@pytest.mark.parametrize(
    "validations, phrases",
    [
        ([], ("needs at least one --validation URI",)),
        (["{folder}"], ("is not a validate output (no blessing.json)", "pass the folder the validate step wrote")),
    ],
    ids=["no_validation", "not_a_validation"],
)
def test_report_without_a_validation_to_read_writes_nothing(cli, tmp_path, validations, phrases):
    (tmp_path / "artifacts").mkdir()
    arguments = [a for v in validations for a in ("--validation", v.format(folder=tmp_path / "artifacts"))]
    result = cli("report", "--name", "t", "--output", str(tmp_path / "run"), *arguments)
    assert result.returncode == 2
    assert_one_line_error(result, *phrases)
    assert not (tmp_path / "run").exists()
