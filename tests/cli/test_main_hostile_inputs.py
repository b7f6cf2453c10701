"""Hostile and mistaken inputs against the real `modelpress` command: every one is exit 2, one line on stderr that
names the problem, no traceback, and nothing written or published (the whole test folder is unchanged)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.tampering import assert_refused, refinish, tree_state

WORKFLOW = "name: t\nmodel: {zoo: mlp, params: {hidden: [8]}}\ndata: {source: digits}\n"


def workflow_file(tmp: Path, text: str | bytes) -> str:
    path = tmp / "wf.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


# ------------------------------------------------------------------------------------------- workflow files
def nested(levels: int) -> str:
    return "a: " + "[" * levels + "]" * levels + "\n"


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)

pytestmark = pytest.mark.integration

WORKFLOWS: dict[str, tuple[str | bytes, tuple[str, ...]]] = {
    "alias-bomb": (ALIAS_BOMB, ("expands to more than 100,000 values",)),
    "alias-loop": ("name: t\nmodel: &m {zoo: mlp, params: {p: *m}}\ndata: {source: digits}\n", ("alias refers to the value that contains it",)),
    "integer-4000-digits": (WORKFLOW + "train: {epochs: " + "9" * 4000 + "}\n", ("too large",)),
    "integer-beyond-64-bit": (WORKFLOW + "train: {epochs: 18446744073709551616}\n", ("line 4", "too large")),
    "hex-integer-beyond-64-bit": (WORKFLOW + "train: {epochs: 0x1ffffffffffffffff}\n", ("too large",)),
    "nested-200-deep": (nested(200), ("nested more than 64 levels",)),
    "nested-20000-deep": (nested(20000), ("nested",)),
    "not-utf8": (b"name: t\xff\xfe\nmodel: {zoo: mlp}\n", ("not UTF-8",)),
    "empty-file": ("", ("a workflow is a YAML mapping",)),
    "top-level-list": ("- name: t\n", ("a workflow is a YAML mapping",)),
    "unclosed-bracket": ("name: t\nmodel: {zoo: mlp\n", ("not valid YAML",)),
    "tab-indentation": ("name: t\nmodel:\n\tzoo: mlp\n", ("not valid YAML",)),
    "over-one-mebibyte": (WORKFLOW + "description: '" + "x" * (1 << 20) + "'\n", ("a workflow is at most",)),
    "name-climbs-out": (WORKFLOW.replace("name: t", "name: ../../x"), ("name",)),
    "push-model-name-with-slash": (WORKFLOW + "push: {model_name: a/b}\n", ("push.model_name",)),
    "push-label-climbs-out": (WORKFLOW + "push: {labels: ['../x']}\n", ("label '../x'",)),
    "serving-model-name-hidden": (WORKFLOW + "serving: {model_name: .hidden}\n", ("serving.model_name",)),
    "unknown-key": (WORKFLOW + "gatez: {}\n", ("unknown key 'gatez'",)),
    "duplicate-key-null": ("name: t\nmodel: ~\ndata: {source: digits}\n", ("model",)),
}


@pytest.mark.parametrize("case", list(WORKFLOWS), ids=list(WORKFLOWS))
def test_workflow_files(cli, tmp_path, case):
    text, phrases = WORKFLOWS[case]
    path = workflow_file(tmp_path, text)
    before = tree_state(tmp_path)
    assert_refused(cli("check", path), *phrases)
    assert tree_state(tmp_path) == before


def test_missing_and_folder_workflow_paths(cli, tmp_path):
    assert_refused(cli("check", str(tmp_path / "none.yaml")), "not found")
    assert_refused(cli("check", str(tmp_path)), "not found")


# ------------------------------------------------------------------------------------------------- data files
def npz(tmp: Path, **arrays) -> Path:
    path = tmp / "d.npz"
    np.savez(path, **arrays)
    return path


def rows(n: int = 60, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 4), dtype=np.float32), np.arange(n) % classes


def object_array(tmp: Path) -> Path:
    x, y = rows()
    path = tmp / "d.npz"
    np.savez(path, x=x, y=np.array([{"label": 1}] * len(y), dtype=object))
    return path


def truncated_npz(tmp: Path) -> Path:
    x, y = rows()
    path = npz(tmp, x=x, y=y)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zip_with_a_broken_member(tmp: Path) -> Path:
    path = tmp / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00garbage")
        archive.writestr("y.npy", b"\x93NUMPY\x01\x00garbage")
    return path


def single_npy(tmp: Path) -> Path:
    path = tmp / "d.npz"
    with open(path, "wb") as handle:
        np.save(handle, rows()[0])
    return path


def with_nan(tmp: Path, value: float) -> Path:
    x, y = rows()
    x[5, 2] = value
    return npz(tmp, x=x, y=y)


def labels(tmp: Path, y) -> Path:
    return npz(tmp, x=rows(len(y))[0], y=np.asarray(y))


DATA: dict[str, tuple[Callable[[Path], Path], str, tuple[str, ...]]] = {
    "x-test-without-y-test": (lambda t: npz(t, x=rows()[0], y=rows()[1], x_test=rows(10)[0]), "", ("has 'x_test' but no 'y_test'",)),
    "y-test-without-x-test": (lambda t: npz(t, x=rows()[0], y=rows()[1], y_test=rows(10)[1]), "", ("has 'y_test' but no 'x_test'",)),
    "fewer-labels-than-rows": (lambda t: npz(t, x=rows()[0], y=rows()[1][:50]), "", ("60 examples but 'y' 50 labels",)),
    "test-lengths-differ": (lambda t: npz(t, x=rows()[0], y=rows()[1], x_test=rows(10)[0], y_test=rows(12)[1]), "", ("'x_test' has 10",)),
    "object-array-labels": (object_array, "", ("array 'y' is unreadable",)),
    "truncated-archive": (truncated_npz, "", ("not a readable .npz",)),
    "broken-member": (zip_with_a_broken_member, "", ("unreadable",)),
    "random-bytes": (lambda t: (t / "d.npz").write_bytes(b"\x00\x01junk" * 50) and t / "d.npz", "", ("not a readable .npz",)),
    "single-npy-not-npz": (single_npy, "", ("single array",)),
    "one-dimensional-features": (lambda t: npz(t, x=np.arange(60.0), y=rows()[1]), "", ("one row per example",)),
    "text-features": (lambda t: npz(t, x=np.array([["a"] * 4] * 60), y=rows()[1]), "", ("features and labels must be numbers",)),
    "class-without-examples": (lambda t: labels(t, [0, 1, 3] * 20), "", ("class 2 has no example", "num_classes: 4")),
    "test-label-outside-classes": (lambda t: npz(t, x=rows()[0], y=rows()[1], x_test=rows(9)[0], y_test=np.array([0, 1, 2] * 2 + [7] * 3)), "", ("out of range 0..2",)),
    "nan-feature": (lambda t: with_nan(t, np.nan), "", ("NaN or infinite",)),
    "infinite-feature": (lambda t: with_nan(t, np.inf), "", ("NaN or infinite",)),
    "nan-label": (lambda t: labels(t, [0.0, 1.0, np.nan] * 20), "", ("label is NaN",)),
    "label-1e30": (lambda t: labels(t, [0.0, 1.0, 1e30] * 20), "", ("too large to be a class",)),
    "fractional-label": (lambda t: labels(t, [0.0, 1.0, 1.5] * 20), "", ("whole class numbers",)),
    "negative-label": (lambda t: labels(t, [0, 1, -1] * 20), "", ("out of range",)),
    "declared-classes-exceeded": (lambda t: labels(t, [0, 1, 2] * 20), "  num_classes: 2\n", ("label 2", "out of range 0..1")),
    "test-shape-differs": (lambda t: npz(t, x=rows()[0], y=rows()[1], x_test=np.zeros((9, 5), np.float32), y_test=np.arange(9) % 3), "", ("test examples have shape (5,)",)),
    "two-dimensional-labels": (lambda t: npz(t, x=rows()[0], y=np.zeros((60, 2))), "", ("labels must be one class per example",)),
}


@pytest.mark.parametrize("case", list(DATA), ids=list(DATA))
def test_data_files(cli, tmp_path, case):
    make, extra, phrases = DATA[case]
    data = make(tmp_path)
    path = workflow_file(tmp_path, f"name: t\nmodel: {{zoo: mlp}}\ndata:\n  source: npz\n  path: {data}\n{extra}")
    before = tree_state(tmp_path)
    assert_refused(cli("run", path, "--out", str(tmp_path / "run")), *phrases)
    assert tree_state(tmp_path) == before


CSV = {
    "csv-huge-label": ("a,b,label\n" + "".join(f"0.{i},0.5,{i % 2}\n" for i in range(20)) + "0.1,0.2,99999999999999999999999\n", ("label",)),
    "csv-class-gap": ("a,b,label\n" + "".join(f"0.{i},0.5,{(i % 2) * 2}\n" for i in range(20)), ("class 1 has no example",)),
    "csv-short-row": ("a,b,label\n0.1,0.2,0\n0.3,1\n", ("line 3: 2 values for 3 columns",)),
}


@pytest.mark.parametrize("case", list(CSV), ids=list(CSV))
def test_csv_files(cli, tmp_path, case):
    text, phrases = CSV[case]
    (tmp_path / "d.csv").write_text(text)
    path = workflow_file(tmp_path, f"name: t\nmodel: {{zoo: mlp}}\ndata: {{source: csv, path: {tmp_path / 'd.csv'}}}\n")
    before = tree_state(tmp_path)
    assert_refused(cli("run", path, "--out", str(tmp_path / "run")), *phrases)
    assert tree_state(tmp_path) == before


# ------------------------------------------------------------------------------------------------- publishing
def edit_blessing(validation: Path, **changes) -> None:
    blessing = json.loads((validation / "blessing.json").read_text())
    for key, value in changes.items():
        if value is None:
            blessing.pop(key, None)
        else:
            blessing[key] = value
    (validation / "blessing.json").write_text(json.dumps(blessing))


def replaced_after_validation(copies) -> None:
    artifact, _ = copies["tflite_fp32"]
    model = artifact / "model.tflite"
    model.write_bytes(model.read_bytes()[:-16] + bytes(16))
    refinish(artifact)  # a consistent artifact, just not the one validated


def unlisted_file(copies) -> None:
    (copies["tflite_fp32"][0] / "extra.py").write_text("print('hello')\n")


def escaping_file_list(copies) -> None:
    artifact = copies["tflite_fp32"][0]
    meta = json.loads((artifact / "artifact.json").read_text())
    meta["files"]["../../escape"] = "0" * 64
    (artifact / "artifact.json").write_text(json.dumps(meta))


PUSHES: dict[str, tuple | object] = {
    "artifact-replaced-after-validation": (replaced_after_validation, {}, ("is not the artifact tflite_fp32 was validated as",)),
    "unlisted-file-in-artifact": (unlisted_file, {}, ("does not list (extra.py)",)),
    "artifact-lists-a-path-outside": (escaping_file_list, {}, ("not a plain relative path",)),
    "blessing-name-climbs-out": (lambda c: edit_blessing(c["tflite_fp32"][1], name="../../../x"), {}, ("not a blessing this version can trust",)),
    "blessing-with-relative-artifact": (lambda c: edit_blessing(c["tflite_fp32"][1], artifact="artifacts/tflite_fp32"), {}, ("is relative",)),
    "blessing-without-digest": (lambda c: edit_blessing(c["tflite_fp32"][1], artifact_digest=None), {}, ("artifact_digest",)),
    "blessing-not-json": (lambda c: (c["tflite_fp32"][1] / "blessing.json").write_text("{not json"), {}, ("not a blessing",)),
    "blessing-missing": (lambda c: (c["tflite_fp32"][1] / "blessing.json").unlink(), {}, ("no blessing.json",)),
    "blessed-flag-a-string": (lambda c: edit_blessing(c["tflite_fp32"][1], blessed="yes please"), {}, ("blessed",)),
    "two-validations-one-name": (lambda c: edit_blessing(c["tflite_fp32"][1], name="train"), {}, ("two validations are named 'train'",)),
    "model-name-climbs-out": (lambda c: None, {"model_name": "../x"}, ("push.model_name",)),
    "label-climbs-out": (lambda c: None, {"labels": ["../../x"]}, ("label '../../x'",)),
    "run-id-with-slash": (lambda c: None, {"run_id": "a/../b"}, ("run_id",)),
}


@pytest.mark.parametrize(("spoil", "settings", "phrases"), list(PUSHES.values()), ids=list(PUSHES))
def test_pushes(cli, tmp_path, validated_copy, spoil, settings, phrases):
    settings = dict(settings)
    spoil(validated_copy)
    run_id = settings.pop("run_id", None)
    config = {"push": {"uri": str(tmp_path / "registry"), "model_name": "tiny", **settings}, **({"run_id": run_id} if run_id else {})}
    inputs = [arg for _, validation in validated_copy.values() for arg in ("--input", f"validations={validation}")]
    before = tree_state(tmp_path)
    result = cli("step", "push", "--config", json.dumps(config), *inputs, "--output", str(tmp_path / "push"))
    assert_refused(result, *phrases)
    assert tree_state(tmp_path) == before and not (tmp_path / "registry").exists()


def test_the_untouched_copy_publishes(cli, tmp_path, validated_copy):
    """The control for test_pushes: the same copies, unspoilt, are accepted."""
    config = {"push": {"uri": str(tmp_path / "registry"), "model_name": "tiny"}}
    inputs = [arg for _, validation in validated_copy.values() for arg in ("--input", f"validations={validation}")]
    result = cli("step", "push", "--config", json.dumps(config), *inputs, "--output", str(tmp_path / "push"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1
    manifest = json.loads((tmp_path / "registry" / "tiny" / "1" / "manifest.json").read_text())
    blessing = json.loads((validated_copy["train"][1] / "blessing.json").read_text())
    train = next(entry for entry in manifest["artifacts"] if entry["name"] == "train")
    assert train["artifact_digest"] == blessing["artifact_digest"]
    import hashlib

    assert train["blessing_sha256"] == hashlib.sha256((validated_copy["train"][1] / "blessing.json").read_bytes()).hexdigest()


NAMES = {
    "registry-list": ("registry", "list", "../x", "--uri", "{tmp}/registry"),
    "registry-show": ("registry", "show", "a/b", "1", "--uri", "{tmp}/registry"),
    "deploy-model": ("deploy", "../x", "--registry", "{tmp}/registry", "--base-path", "{tmp}/serving"),
    "deploy-label": ("deploy", "tiny", "--registry", "{tmp}/registry", "--label", "../x", "--base-path", "{tmp}/serving"),
    "rollback-model": ("rollback", "..", "--base-path", "{tmp}/serving"),
}


@pytest.mark.parametrize("case", list(NAMES), ids=list(NAMES))
def test_names_on_the_command_line(cli, tmp_path, case):
    before = tree_state(tmp_path)
    result = cli(*(arg.format(tmp=tmp_path) for arg in NAMES[case]))
    assert_refused(result, "lower-case letters, digits")
    assert tree_state(tmp_path) == before


# -------------------------------------------------------------------------------------------- model files
def truncate_tflite(copies) -> Path:
    artifact, _ = copies["tflite_fp32"]
    model = artifact / "model.tflite"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    refinish(artifact)
    return artifact


def wrong_magic_tflite(copies) -> Path:
    artifact, _ = copies["tflite_fp32"]
    (artifact / "model.tflite").write_bytes(b"\x00" * 4096)
    refinish(artifact)
    return artifact


def garbage_saved_model(copies) -> Path:
    artifact, _ = copies["train"]
    (artifact / "saved_model" / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0fnot a proto")
    refinish(artifact)
    return artifact


MODELS = {
    "truncated-tflite": (truncate_tflite, ("is not a TFLite flatbuffer",)),
    "tflite-without-its-signature": (wrong_magic_tflite, ("wrong format signature",)),
    "saved-model-that-does-not-parse": (garbage_saved_model, ("is not a TensorFlow SavedModel",)),
}


@pytest.mark.parametrize("case", list(MODELS), ids=list(MODELS))
def test_corrupt_model_files_are_refused_before_a_runtime_runs_them(cli, tmp_path, validated_copy, case):
    spoil, phrases = MODELS[case]
    artifact = spoil(validated_copy)
    config = {"name": "x", "data": {"source": "digits"}, "evaluation": {"latency_runs": 5}}
    before = tree_state(tmp_path)
    result = cli("step", "validate", "--config", json.dumps(config), "--input", f"model={artifact}", "--output", str(tmp_path / "v"))
    assert_refused(result, *phrases)
    assert tree_state(tmp_path) == before


# ---------------------------------------------------------------------------------------- layer modules
# artifact.json's custom_layers names the modules a step imports to rebuild the model's own layers; importing runs
# them, so only the package of the workflow's model.builder is imported. Each case: step, model section, the record.
HOSTILE = {"x>Evil": "hostile_layers:Evil"}
LAYER_MODULES = {
    "zoo-model-names-a-module": ("prune", {"zoo": "mlp"}, HOSTILE, ("names module 'hostile_layers'", "zoo model 'mlp'")),
    "module-outside-the-builder-package": ("convert", {"builder": "tiny_pkg.models:build"}, HOSTILE, ("outside package 'tiny_pkg'",)),
    "package-name-only-a-prefix": ("cluster", {"builder": "hostile:build"}, HOSTILE, ("outside package 'hostile'",)),
    "relative-module-name": ("distill", {"builder": "hostile_layers:build"}, {"x>Evil": ".hostile_layers:Evil"}, ("names module '.hostile_layers'",)),
    "no-model-section": ("quantize", None, HOSTILE, ("without the workflow's model section", '"model": {"builder"')),
    "record-not-a-mapping": ("prune", {"builder": "hostile_layers:build"}, ["hostile_layers:Evil"], ("custom_layers that is not a mapping",)),
}
STEP_OPTIONS = {"convert": {"format": "tflite_fp32"}, "distill": {"student": {"zoo": "mlp", "params": {"hidden": [8]}}}}


@pytest.mark.parametrize(("step", "model", "recorded", "phrases"), list(LAYER_MODULES.values()), ids=list(LAYER_MODULES))
def test_a_layer_module_the_workflow_does_not_declare_is_never_imported(cli, tmp_path, validated_copy, step, model, recorded, phrases):
    modules, imported = tmp_path / "modules", tmp_path / "imported"
    modules.mkdir()
    (modules / "hostile_layers.py").write_text(f"open({str(imported)!r}, 'w').close()\n")  # its mark, if ever imported
    artifact = validated_copy["train"][0]
    meta = json.loads((artifact / "artifact.json").read_text())
    meta["details"]["custom_layers"] = recorded
    (artifact / "artifact.json").write_text(json.dumps(meta))
    config = {"data": {"source": "digits"}, **STEP_OPTIONS.get(step, {}), **({"model": model} if model else {})}
    before = tree_state(tmp_path)
    result = cli("step", step, "--config", json.dumps(config), "--input", f"model={artifact}", "--output", str(tmp_path / "out"),
                 env={"PYTHONPATH": str(modules)})
    assert_refused(result, *phrases)
    assert tree_state(tmp_path) == before and not imported.exists()


def test_validation_name_that_climbs_out(cli, tmp_path, validated_copy):
    config = {"name": "../../../x", "data": {"source": "digits"}}
    artifact = validated_copy["tflite_fp32"][0]
    result = cli("step", "validate", "--config", json.dumps(config), "--input", f"model={artifact}", "--output", str(tmp_path / "v"))
    assert_refused(result, "name")
    assert not (tmp_path / "v").exists()
