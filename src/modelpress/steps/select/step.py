"""select: the end of a search. It reads every validation of the run and writes, as its own output, the validation
of the artifact push and deploy publish: the one meeting the target from the cheapest rung (the most accurate of
them, then the smallest, then the fastest), its blessing extended with the target's checks. When no artifact meets
the target it writes the closest one's, unblessed with the reasons (which gate or target it missed, by how much),
so nothing is published, unless search.publish_closest is set and that artifact passed the gates. search.json
holds the whole table."""

from __future__ import annotations

import json
import shutil

from modelpress.common.progress import log
from modelpress.contract.search import TRAINED
from modelpress.io import storage
from modelpress.io.artifacts import BLESSING_FILE, read_blessing
from modelpress.io.search import SEARCH_FILE, evaluate
from modelpress.steps.select.config import SelectConfig


def run(config: SelectConfig, inputs: dict[str, str | list[str]], output: str, overwrite: bool = False) -> dict:
    storage.check_output(output, overwrite)
    spec = config.search
    validations = inputs["validations"]
    outcome = evaluate(spec, [validations] if isinstance(validations, str) else validations, spec.rung_names())
    if outcome is None:
        return {"skipped": True, "reason": "the trained model was not validated, so there is nothing to measure the search against"}
    chosen = outcome.chosen
    publish = outcome.selected is not None or (outcome.closest is not None and spec.publish_closest and chosen["blessed"])
    # the target's checks of the artifact it stands for (none when no artifact of the target's format was made)
    checks = [{key: value for key, value in c.items() if key != "miss"} for c in chosen["checks"]] if chosen["counted"] else []
    misses = [c["reason"] for c in checks if not c["passed"]] if chosen["counted"] else [outcome.verdict]
    blessing, _ = read_blessing(chosen["validation_uri"])
    blessing = blessing.model_copy(
        update={
            "blessed": publish,
            "reasons": [] if publish else [*blessing.reasons, *misses],
            "gates": [*blessing.gates, *checks],
            "thresholds": {**blessing.thresholds, **{c["gate"]: c["threshold"] for c in checks}},
        }
    )
    search = outcome.as_json()
    with storage.local_copy(chosen["validation_uri"]) as validation, storage.staged_output(output, overwrite=overwrite, marker=BLESSING_FILE) as folder:
        for path in (p for p in validation.iterdir() if p.is_file() and p.name != BLESSING_FILE):
            shutil.copyfile(path, folder / path.name)  # the evaluation, predictions and golden rows it was validated with
        (folder / SEARCH_FILE).write_text(json.dumps(search, indent=2))
        (folder / BLESSING_FILE).write_text(blessing.model_dump_json(indent=2))
    if outcome.selected is None and publish:
        log(f"{outcome.verdict}; publishing it anyway (search.publish_closest)")
    else:
        log(outcome.verdict if publish else f"{outcome.verdict}; nothing to publish (set search.publish_closest to publish it)")
    tried = {row["rung"] for row in outcome.rows if row["artifact"] is not None} - {TRAINED}
    skipped = [row["rung"] for row in outcome.rows if row["skipped"]]
    metrics = {key: value for key, value in blessing.metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    metrics |= {"target_met": int(outcome.selected is not None), "rungs_tried": len(tried), "rungs_skipped": len(skipped)}
    return {"uri": output, "blessed": publish, "reasons": blessing.reasons, "selected": blessing.name, "metrics": metrics, "search": search}
