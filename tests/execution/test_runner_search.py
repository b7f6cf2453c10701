"""`modelpress run` of a workflow with a search: the cheapest recipe meeting the target is published and later rungs
never train; an unreachable target publishes nothing and says which recipe came closest and why."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.conftest import TINY_WORKFLOW

pytestmark = pytest.mark.integration


def search_workflow(tmp_path, search: str) -> str:
    path = tmp_path / "search.yaml"
    path.write_text(TINY_WORKFLOW + "gates: {min_accuracy: 0.5}\npush: {}\nsearch:\n" + search)
    return str(path)


def test_the_cheapest_recipe_meeting_a_reachable_target_is_published_and_later_rungs_never_train(cli, tmp_path):
    workflow = search_workflow(
        tmp_path,
        "  target: {max_size_ratio: 0.5}\n  ladder:\n"
        "    - {name: ptq_int8, compress: [{technique: quantize, mode: int8}]}\n"
        "    - {name: qat_int8, compress: [{technique: quantize, mode: qat}, {technique: quantize, mode: int8}]}\n",
    )
    out = tmp_path / "run"
    result = cli("run", workflow, "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    search = summary["search"]
    assert (search["selected"], search["met"]) == ("ptq_int8-tflite_int8", True)
    ptq = next(row for row in search["rows"] if row["rung"] == "ptq_int8")
    assert ptq["met"] and ptq["size_ratio"] <= 0.5 and ptq["blessed"]
    qat = next(row for row in search["rows"] if row["rung"] == "qat_int8")
    assert (qat["artifact"], qat["skipped"], qat["note"]) == (None, True, "skipped: rung ptq_int8 already met the target")
    # The QAT rung was decided against before it trained: its search task skipped, and so did its first task.
    assert "search_qat_int8 skipped: not needed: ptq_int8-tflite_int8 (rung ptq_int8: quantize(mode=int8)) meets the target" in result.stderr
    assert "qat_int8-quantize skipped: the task it runs after was skipped" in result.stderr
    assert [p.name for p in (out / "artifacts" / "qat_int8-quantize").iterdir()] == ["skipped.json"]
    assert {row["name"] for row in summary["artifacts"]} == {"train", "ptq_int8-tflite_int8"}
    # Only the selected artifact is published.
    manifest = json.loads((out / "registry" / "tiny" / "1" / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["ptq_int8-tflite_int8"]
    assert manifest["artifacts"][0]["gates"][-1]["gate"] == "target.max_size_ratio"
    report = (out / "report.md").read_text()
    assert "## Search" in report and "| qat_int8 | quantize(mode=qat) -> quantize(mode=int8) | - |" in report
    assert search["verdict"] in result.stdout and html.escape(search["verdict"]) in (out / "report.html").read_text()


def test_an_unreachable_target_publishes_nothing_and_says_which_recipe_came_closest_and_why(cli, tmp_path):
    workflow = search_workflow(
        tmp_path,
        "  target: {max_size_ratio: 0.01}\n  ladder:\n"
        "    - {name: ptq_int8, compress: [{technique: quantize, mode: int8}]}\n"
        "    - {name: ptq_fp16, compress: [{technique: quantize, mode: fp16}]}\n",
    )
    out = tmp_path / "run"
    result = cli("run", workflow, "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {row["name"] for row in summary["artifacts"]} == {"train", "ptq_int8-tflite_int8", "ptq_fp16-tflite_fp16"}
    verdict = summary["search"]["verdict"]
    # Every rung ran; the int8 model is the smallest, so it came closest, and the line says by how much it missed.
    assert re.fullmatch(
        r"no recipe met the target; closest: ptq_int8-tflite_int8 \(rung ptq_int8: quantize\(mode=int8\)\): gzip size "
        r"0\.\d{3} of the trained SavedModel's, above max_size_ratio 0\.01 \(\d+% over\)",
        verdict,
    ), verdict
    assert summary["search"]["met"] is False and not any(row["skipped"] for row in summary["search"]["rows"])
    assert f"skipped push: no validation it reads blessed its model; nothing to publish (ptq_int8-tflite_int8: {verdict.split('): ', 1)[1]})" in result.stdout
    assert not (out / "registry").exists()
