"""The workflow spec: what a platform team's YAML mistakes look like to them."""

from __future__ import annotations

import textwrap

import pytest

from modelpress.common.errors import UserError
from modelpress.contract.workflow import Workflow
from modelpress.execution.plan import load_workflow

VALID = """\
name: demo
model:
  zoo: mlp
data:
  source: digits
"""


def write(tmp_path, text: str):
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(UserError) as caught:
        load_workflow(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_minimal_workflow_gets_sensible_defaults(tmp_path):
    workflow = load_workflow(write(tmp_path, VALID))
    assert isinstance(workflow, Workflow)
    assert workflow.train.epochs == 20 and workflow.train.optimizer == "adam"
    assert [t.format for t in workflow.targets] == ["saved_model"]
    assert workflow.data.split.test == 0.2 and workflow.data.split.seed == 0
    assert workflow.kubernetes.gpu_resource == "nvidia.com/gpu"


def test_misspelt_key_names_line_key_and_closest_valid_key(tmp_path):
    message = error_of(tmp_path, VALID + "train:\n  epochs: 3\n  batch_sise: 8\n")
    assert message == "wf.yaml line 8: train: unknown key 'batch_sise'; did you mean 'batch_size'?".replace(
        "wf.yaml", str(tmp_path / "wf.yaml")
    )


def test_the_old_cluster_section_gets_a_one_line_migration_error(tmp_path):
    message = error_of(tmp_path, VALID + "cluster:\n  namespace: ml\n")
    assert message == (
        f"{tmp_path / 'wf.yaml'} line 6: (top level): renamed key 'cluster': the section is now called 'kubernetes' "
        "(same keys); rename 'cluster:' to 'kubernetes:'"
    )
    assert load_workflow(write(tmp_path, VALID + "kubernetes:\n  namespace: ml\n")).kubernetes.namespace == "ml"


def test_unknown_top_level_key_without_close_match_lists_valid_keys(tmp_path):
    message = error_of(tmp_path, VALID + "zzz: 1\n")
    assert "unknown key 'zzz'" in message and "valid keys:" in message and "compress" in message


def test_wrong_type_shows_value(tmp_path):
    message = error_of(tmp_path, VALID + "train:\n  epochs: ten\n")
    assert "line 7" in message and "train.epochs" in message and "'ten'" in message


def test_unknown_data_source_suggests_closest(tmp_path):
    message = error_of(tmp_path, VALID.replace("source: digits", "source: digitz"))
    assert "unknown source 'digitz'; did you mean 'digits'?" in message


def test_unknown_zoo_model_lists_the_zoo(tmp_path):
    message = error_of(tmp_path, VALID.replace("zoo: mlp", "zoo: resnet50"))
    assert "unknown zoo model 'resnet50'" in message and "mobilenet_v2" in message


def test_bad_builder_path(tmp_path):
    message = error_of(tmp_path, VALID.replace("zoo: mlp", "builder: my model"))
    assert "package.module:function" in message


def test_zoo_and_builder_together_is_an_error(tmp_path):
    message = error_of(tmp_path, VALID.replace("zoo: mlp", "zoo: mlp\n  builder: a.b:c"))
    assert "exactly one of 'zoo'" in message


def test_unknown_technique_and_target(tmp_path):
    assert "did you mean 'prune'?" in error_of(tmp_path, VALID + "compress:\n  - technique: prnue\n")
    assert "did you mean 'tflite_int8'?" in error_of(tmp_path, VALID + "targets: [tflite_int9]\n")


def test_duplicate_target(tmp_path):
    assert "listed twice" in error_of(tmp_path, VALID + "targets: [saved_model, saved_model]\n")


def test_gate_out_of_range(tmp_path):
    message = error_of(tmp_path, VALID + "gates:\n  min_accuracy: 95\n")
    assert "gates.min_accuracy" in message and "95" in message


def test_split_leaving_nothing_to_train_on(tmp_path):
    message = error_of(tmp_path, VALID.replace("source: digits", "source: digits\n  split: {val: 0.5, test: 0.45}"))
    assert "too little to train on" in message


def test_missing_required_section(tmp_path):
    assert error_of(tmp_path, "name: x\nmodel: {zoo: mlp}\n").endswith("required key 'data' is missing")


def test_bad_name(tmp_path):
    assert "lower-case" in error_of(tmp_path, VALID.replace("name: demo", "name: My Model"))


def test_invalid_yaml_and_missing_file(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "name: x\n  model: [\n")
    with pytest.raises(UserError, match="not found"):
        load_workflow(tmp_path / "absent.yaml")


def test_several_problems_are_counted_not_dumped(tmp_path):
    message = error_of(tmp_path, "name: x\nmodel: {zoo: nope}\ndata: {source: csv}\n")
    assert "(+" in message and "more problem" in message


# ------------------------------------------------------------------------------- compress entries and `from:`
BRANCHED = VALID + """\
compress:
  - technique: prune
    sparsity: 0.5
  - technique: distill
    from: train
    student: {zoo: mlp, params: {hidden: [32]}}
  - technique: cluster
    from: prune
targets: [saved_model, tflite_int8]
"""


def test_from_starts_a_technique_from_train_or_an_earlier_entry(tmp_path):
    from modelpress.execution.plan import build_plan

    plan = {task.id: task for task in build_plan(load_workflow(write(tmp_path, BRANCHED)))}
    assert plan["prune"].inputs == {"model": "train"}
    assert plan["distill"].inputs == {"model": "train"}  # the teacher is the trained model, not the pruned one
    assert plan["cluster"].inputs == {"model": "prune"}
    # each artifact's agreement is measured against the model it started from; drops against the trained model
    assert plan["validate_distill"].inputs == {"model": "distill", "parent": "validate_train", "baseline": "validate_train"}
    assert plan["validate_cluster"].inputs["parent"] == "validate_prune"
    # targets convert the final model: the last entry of compress
    assert plan["convert_tflite_int8"].inputs == {"model": "cluster"}


def test_a_validation_loads_its_parent_with_the_parents_model_section(tmp_path):
    """A rejection's per-layer sensitivity loads the parent Keras model: a distilled student's children are built
    from the student's section, not the workflow's."""
    from modelpress.contract.training import ModelSpec
    from modelpress.execution.plan import build_plan

    text = VALID + "compress:\n  - {technique: distill, student: {builder: 'students.small:build'}}\n  - {technique: prune}\ntargets: [tflite_int8]\n"
    workflow = load_workflow(write(tmp_path, text))
    plan = {task.id: task for task in build_plan(workflow)}
    student = ModelSpec(builder="students.small:build")
    assert plan["validate_distill"].config.model == workflow.model  # its parent is the trained teacher
    assert plan["validate_prune"].config.model == student
    assert plan["validate_convert_tflite_int8"].config.model == student


CHAIN = VALID + """\
compress:
  - technique: prune
    sparsity: 0.5{prune_from}
  - technique: cluster{cluster_from}
  - technique: distill
    student: {{zoo: mlp}}{distill_from}
"""


@pytest.mark.parametrize(
    "froms, line, message",
    [
        (
            {"prune_from": "cluster"},
            9,
            "compress[0] (prune): from makes a cycle: prune, which starts from cluster, which starts from prune; "
            "every model must lead back to train",
        ),
        (
            {"prune_from": "cluster", "cluster_from": "train"},
            9,
            "compress[0] (prune): from 'cluster' runs after this entry; list the techniques in the order they run",
        ),
        (
            {"cluster_from": "cluster"},
            10,
            "compress[1] (cluster): from makes a cycle: cluster, which starts from cluster; every model must lead back to train",
        ),
        (
            {"cluster_from": "distill", "distill_from": "cluster"},
            10,
            "compress[1] (cluster): from makes a cycle: cluster, which starts from distill, which starts from cluster; "
            "every model must lead back to train",
        ),
        (
            {"distill_from": "prun"},
            12,
            "compress[2] (distill): from 'prun' is not an artifact of this workflow; did you mean 'prune'?",
        ),
    ],
)
def test_a_from_that_loops_or_points_forward_names_the_entry_and_line(tmp_path, froms, line, message):
    values = {key: "" for key in ("prune_from", "cluster_from", "distill_from")}
    values.update({key: f"\n    from: {value}" for key, value in froms.items()})
    assert error_of(tmp_path, CHAIN.format(**values)) == f"{tmp_path / 'wf.yaml'} line {line}: {message}"


def test_from_on_post_training_quantization_is_refused(tmp_path):
    text = VALID + "compress:\n  - technique: prune\n  - technique: quantize\n    mode: int8\n    from: train\n"
    assert error_of(tmp_path, text).endswith(
        "compress[1] (quantize): remove from: post-training quantization converts the final model of compress"
    )
