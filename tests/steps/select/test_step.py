"""select: the validation of what a search publishes: the selected artifact's, or the closest one's, unblessed."""

from __future__ import annotations

import json

from modelpress.io.artifacts import read_blessing
from modelpress.steps.select.config import SelectConfig
from modelpress.steps.select.step import run
from tests.search_validations import spec, write_validation


def validations(tmp_path) -> list[str]:
    return [
        write_validation(tmp_path, "train", "saved_model"),
        write_validation(tmp_path, "ptq-tflite_int8", size_gzip_bytes=6_000, accuracy=0.955),
        write_validation(tmp_path, "qat-tflite_int8", blessed=False, size_gzip_bytes=3_000),
    ]


def test_the_selected_artifacts_validation_is_the_output_with_the_targets_checks(tmp_path):
    output = tmp_path / "validation" / "select"
    result = run(SelectConfig(search=spec({"max_size_ratio": 0.4}, ("ptq", "qat", "pruned"))), {"validations": validations(tmp_path)}, str(output))
    blessing, _ = read_blessing(str(output))
    assert (blessing.name, blessing.blessed, blessing.reasons) == ("ptq-tflite_int8", True, [])
    assert blessing.gates[-1] == {"gate": "target.max_size_ratio", "threshold": 0.4, "value": 0.3, "passed": True, "reason": None}
    assert blessing.thresholds == {"max_drop": 0.01, "target.max_size_ratio": 0.4}
    # the files deploy and push read with it: the chosen artifact's own
    assert (output / "golden.npz").read_bytes() == b"golden rows of ptq-tflite_int8"
    assert json.loads((output / "search.json").read_text())["selected"] == "ptq-tflite_int8"
    assert result["metrics"]["target_met"] == 1 and result["metrics"]["accuracy"] == 0.955
    assert (result["metrics"]["rungs_tried"], result["metrics"]["rungs_skipped"]) == (2, 1)  # pruned: ptq met the target first


def test_when_nothing_meets_the_target_the_closest_is_written_unblessed_unless_publish_closest(tmp_path):
    found = validations(tmp_path)
    output = tmp_path / "validation" / "select"
    result = run(SelectConfig(search=spec({"max_size_ratio": 0.1})), {"validations": found}, str(output))
    reason = "gzip size 0.300 of the trained SavedModel's, above max_size_ratio 0.1 (200% over)"
    assert (result["selected"], result["blessed"], result["reasons"]) == ("ptq-tflite_int8", False, [reason])
    assert read_blessing(str(output))[0].reasons == [reason] and result["metrics"]["target_met"] == 0

    published = run(SelectConfig(search=spec({"max_size_ratio": 0.1}, publish_closest=True)), {"validations": found}, str(tmp_path / "closest"))
    assert (published["selected"], published["blessed"], published["reasons"]) == ("ptq-tflite_int8", True, [])
    # a closest artifact that failed the gates is never published
    unblessed = run(
        SelectConfig(search=spec({"max_size_ratio": 0.1, "format": "tflite_int8"}, publish_closest=True)),
        {"validations": [found[0], found[2]]}, str(tmp_path / "unblessed"),
    )  # fmt: skip
    assert unblessed["selected"] == "qat-tflite_int8" and unblessed["blessed"] is False
    assert unblessed["reasons"] == [
        "accuracy drop 2.00 pp vs train exceeds max_drop 1.00 pp",
        "gzip size 0.150 of the trained SavedModel's, above max_size_ratio 0.1 (50% over)",
    ]
