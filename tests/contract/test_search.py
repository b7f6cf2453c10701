"""The search section: its mistakes are one line naming file, line and key; a valid one gets the default ladder."""

from __future__ import annotations

import pytest

from modelpress.cli.main import main
from modelpress.contract.search import DEFAULT_LADDER
from modelpress.execution.plan import build_plan, load_workflow

WORKFLOW = "name: s\nmodel: {zoo: mlp}\ndata: {source: digits}\n"


def check_error(tmp_path, capsys, extra: str) -> str:
    """What `modelpress check` says about a workflow with `extra` appended: exactly one line."""
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW + extra)
    assert main(["check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0].removeprefix(f"modelpress: error: {path}").lstrip()


def test_a_target_alone_gets_the_default_ladder_cheapest_first(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW + "search: {target: {max_size_ratio: 0.1}}\n")
    search = load_workflow(path).search
    assert [r.name for r in search.ladder] == ["ptq_int8", "qat_int8", "prune_qat_int8", "structured_distill_int8"]
    assert [r.recipe() for r in search.ladder] == [
        "quantize(mode=int8)",
        "quantize(mode=qat) -> quantize(mode=int8)",
        "prune(sparsity=0.5) -> quantize(mode=pqat) -> quantize(mode=int8)",
        "prune(method=structured, ratio=0.5, teacher=True) -> quantize(mode=int8)",
    ]
    assert search.ladder is not DEFAULT_LADDER and not search.publish_closest


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("search: {target: {}}\n",
         "line 4: search.target: the target is empty; set one or more of max_size_ratio, max_gzip_bytes, max_latency_ms, min_speedup"),
        ("search: {target: {max_size_ration: 0.1}}\n",
         "line 4: search.target: unknown key 'max_size_ration'; did you mean 'max_size_ratio'?"),
        ("search: {target: {max_size_ratio: 0}}\n",
         "line 4: search.target.max_size_ratio: Input should be greater than 0 (got 0)"),
        ("search: {target: {min_speedup: 2, format: tflite_in8}}\n",
         "line 4: search.target.format: unknown format 'tflite_in8'; did you mean 'tflite_int8'?"),
        ("search:\n  target: {max_size_ratio: 0.1}\n  ladder: [{name: a, compress: []}]\n",
         "line 6: search.ladder.0.compress: List should have at least 1 item after validation, not 0 (got [])"),
        ("search:\n  target: {max_size_ratio: 0.1}\n  ladder: [{name: int8-ptq, compress: [{technique: quantize, mode: int8}]}]\n",
         "line 6: search.ladder.0.name: String should match pattern '^[a-z0-9][a-z0-9_]{0,23}$' (got 'int8-ptq')"),
        ("search:\n  target: {max_size_ratio: 0.1}\n  ladder:\n    - {name: a, compress: [{technique: quantize, mode: int8}]}\n"
         "    - {name: a, compress: [{technique: quantize, mode: fp16}]}\n",
         "line 6: search.ladder: two rungs are named 'a'; name each rung once"),
        ("compress: [{technique: prune}]\nsearch: {target: {max_size_ratio: 0.1}}\n",
         "line 5: search: search tries its own recipes: move the compress entries into a rung of search.ladder, or remove search"),
    ],
    ids=["empty target", "misspelt limit", "zero ratio", "unknown format", "empty recipe", "dash in rung name",
         "rung named twice", "search and compress"],
)  # fmt: skip
def test_schema_mistakes_are_one_line(extra, message, tmp_path, capsys):
    assert check_error(tmp_path, capsys, extra) == message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("search:\n  target: {max_size_ratio: 0.1}\n  ladder:\n    - name: pruned\n      compress:\n"
         "        - {technique: prune, sparsty: 0.8}\n",
         "line 9: search.ladder[0].compress[0] (prune): unknown key 'sparsty'; did you mean 'sparsity'?"),
        ("search:\n  target: {max_size_ratio: 0.1}\n  ladder:\n    - name: late\n      compress:\n"
         "        - {technique: quantize, mode: int8}\n        - {technique: prune}\n",
         "line 9: search.ladder[0].compress[0]: quantize mode int8 is the tflite_int8 conversion of the final model; move it after prune"),
        ("search:\n  target: {max_size_ratio: 0.1}\n  ladder:\n    - name: two\n      compress:\n"
         "        - {technique: prune}\n        - {technique: cluster, from: prun}\n",
         "line 10: search.ladder[0].compress[1] (cluster): from 'prun' is not an artifact of this workflow; did you mean 'prune'?"),
        ("search: {target: {max_latency_ms: 1, format: openvino_int8}}\n",
         "line 4: search.target.format openvino_int8: no rung makes it; add it to targets (every rung's final model is converted to them)"),
        ("search: {target: {max_size_ratio: 0.1, format: tflite_int8}}\nserving: {}\n",
         ": (top level): serving deploys the artifact the search selects, and tfserving runs saved_model: "
         "set search.target.format to saved_model, or remove serving"),
    ],
    ids=["misspelt technique key", "conversion before a Keras step", "from names no entry", "format no rung makes",
         "serving a format it cannot run"],
)  # fmt: skip
def test_plan_mistakes_in_a_rung_are_one_line_at_their_line(extra, message, tmp_path, capsys):
    assert check_error(tmp_path, capsys, extra) == message


def test_each_rung_is_a_branch_from_train_that_waits_for_its_search_task(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        WORKFLOW + "targets: [saved_model, onnx]\npush: {}\nserving: {}\nsearch:\n  target: {min_speedup: 2, format: saved_model}\n"
        "  ladder:\n    - {name: ptq, compress: [{technique: quantize, mode: int8}]}\n"
        "    - {name: pruned, compress: [{technique: prune}, {technique: cluster, from: train}]}\n"
    )
    plan = {task.id: task for task in build_plan(load_workflow(path))}
    # A rung's tasks are the ones its compress list makes without search, named <rung>-..., each starting from train
    # (or its own entries); the ones reading train wait for the rung's search task, which reads every earlier validation.
    assert plan["ptq-convert_tflite_int8"].inputs == {"model": "train", "after": "search_ptq"}
    assert plan["ptq-convert_onnx"].inputs == {"model": "train", "after": "search_ptq"}
    assert plan["pruned-prune"].inputs == {"model": "train", "after": "search_pruned"}
    assert plan["pruned-cluster"].inputs == {"model": "train", "after": "search_pruned"}
    assert plan["pruned-convert_onnx"].inputs == {"model": "pruned-cluster"}  # inside the rung: no wait of its own
    assert plan["search_ptq"].inputs == {"validations": ["validate_train"]}
    assert plan["search_pruned"].inputs == {
        "validations": ["validate_train", "validate_ptq-convert_onnx", "validate_ptq-convert_tflite_int8"]
    }
    assert plan["validate_pruned-cluster"].artifact == "pruned-cluster"
    assert plan["select"].inputs["validations"][-1] == "validate_pruned-convert_onnx"
    # Push and deploy read only the selection.
    assert plan["push"].inputs == {"validations": ["select"]}
    assert plan["deploy"].inputs == {"validation": "select", "release": "push"}
