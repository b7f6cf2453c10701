"""search: before a rung of the search ladder, decide whether it still has to run. It reads every validation made
so far (the trained model's and the earlier rungs'); when one of those artifacts is blessed and meets the target,
the step skips, and with it every task of the rung (they read this task as their `after` input), so no later rung
spends its training. Otherwise it writes search.json: the table so far and the closest artifact."""

from __future__ import annotations

import json

from modelpress.common.progress import log
from modelpress.io import storage
from modelpress.io.search import SEARCH_FILE, evaluate
from modelpress.steps.search.config import SearchConfig

NO_BASELINE = "the trained model was not validated, so there is nothing to measure the search against"


def run(config: SearchConfig, inputs: dict[str, str | list[str]], output: str, overwrite: bool = False) -> dict:
    storage.check_output(output, overwrite)
    names = config.search.rung_names()
    validations = inputs["validations"]
    outcome = evaluate(config.search, [validations] if isinstance(validations, str) else validations, names[: names.index(config.rung)])
    if outcome is None:
        return {"skipped": True, "reason": NO_BASELINE}
    if outcome.selected is not None:
        return {"skipped": True, "reason": f"not needed: {outcome.verdict}"}
    with storage.staged_output(output, overwrite=overwrite, marker=SEARCH_FILE) as folder:
        (folder / SEARCH_FILE).write_text(json.dumps(outcome.as_json(), indent=2))
    log(f"rung {config.rung} runs: {outcome.verdict}")
    return {"uri": output, "rung": config.rung, "verdict": outcome.verdict}
