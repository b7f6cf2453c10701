"""search: the task before a rung decides from the validations so far whether the rung still runs."""

from __future__ import annotations

import json

from modelpress.steps.search.config import SearchConfig
from modelpress.steps.search.step import NO_BASELINE, run
from tests.search_validations import spec, write_validation


def test_a_needed_rung_gets_the_table_so_far_and_why_it_runs(tmp_path):
    validations = [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=12_000),
        write_validation(tmp_path, "qat-tflite_int8", size_gzip_bytes=1_000),  # a later rung's: not this decision's
    ]
    config = SearchConfig(search=spec({"max_size_ratio": 0.5}, ("ptq", "qat", "pruned")), rung="qat")
    result = run(config, {"validations": validations}, str(tmp_path / "search_qat"))
    assert result["verdict"] == (
        "no recipe met the target; closest: ptq-tflite_int8 (rung ptq: quantize(mode=int8)): gzip size 0.600 of the "
        "trained SavedModel's, above max_size_ratio 0.5 (20% over)"
    )
    written = json.loads((tmp_path / "search_qat" / "search.json").read_text())
    assert [row["artifact"] for row in written["rows"]] == ["train", "ptq-tflite_int8"] and written["met"] is False


def test_without_the_trained_models_validation_the_rung_skips(tmp_path):
    config = SearchConfig(search=spec({"max_size_ratio": 0.5}), rung="ptq")
    assert run(config, {"validations": []}, str(tmp_path / "search_ptq")) == {"skipped": True, "reason": NO_BASELINE}
    assert not (tmp_path / "search_ptq").exists()
