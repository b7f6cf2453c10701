"""Run parameters: one list for Kubeflow and Airflow, with the spec's values as defaults and the config fields'
descriptions."""

from __future__ import annotations

from modelpress.execution.parameters import run_parameters, step_parameters
from modelpress.execution.plan import build_plan, load_workflow
from modelpress.steps.catalog import STEPS


def parameters_of(tmp_path, text: str) -> dict[str, tuple]:
    path = tmp_path / "knobs.yaml"
    path.write_text(text)
    return {p.name: (p.default, p.description) for p in run_parameters(build_plan(load_workflow(path)))}


def test_defaults_are_the_specs_values_and_unset_gates_are_no_parameter(tmp_path):
    found = parameters_of(tmp_path, "name: knobs\nmodel: {zoo: mlp}\ndata: {source: digits}\ntrain: {epochs: 7}\ngates: {min_accuracy: 0.9}\n")
    assert found == {
        "epochs": (7, "passes over the training split"),
        "batch_size": (32, "examples per gradient step"),
        "min_accuracy": (0.9, "lowest test accuracy allowed"),
    }


def test_a_fields_description_is_the_one_of_the_data_source_the_spec_uses(tmp_path):
    csv = "name: knobs\nmodel: {zoo: mlp}\ndata: {source: csv, path: s3://drops/t.csv, label_column: label}\n"
    assert parameters_of(tmp_path, csv)["data_uri"] == ("s3://drops/t.csv", "local path or s3://bucket/key")
    optdigits = "name: knobs\nmodel: {zoo: mlp}\ndata: {source: optdigits, path: /data/optdigits}\n"
    assert parameters_of(tmp_path, optdigits)["data_uri"][1].startswith("folder with optdigits.tra/.tes")


def test_each_step_gets_only_the_parameters_its_config_has():
    assert [p.name for p in step_parameters(STEPS["prune"])] == ["data_uri", "epochs", "batch_size", "sparsity"]
    assert [p.name for p in step_parameters(STEPS["push"])] == ["push_uri"]
