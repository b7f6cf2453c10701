"""The search section: a target (size, batch-1 latency, or both) and a ladder of compression recipes tried cheapest
first; the gates stay the accuracy budget. The plan makes each rung an ordinary branch of the plan (its compress
list, then the workflow's targets); a rung runs only when no earlier one met the target."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, field_validator, model_validator

from modelpress.contract.compression import TechniqueSpec
from modelpress.contract.formats import TARGET_FORMATS
from modelpress.contract.schema import StrictModel

# A rung's name prefixes its artifacts' names (<rung>-<artifact>): no '-' in it, so the prefix is unambiguous, and
# short enough that the artifact names stay within the 63 characters of a name.
RUNG_PATTERN = r"^[a-z0-9][a-z0-9_]{0,23}$"
RUNG_SEPARATOR = "-"
TRAINED = "train"  # the trained model: rung 0, what every size ratio and speed-up is measured against


def rung_artifact(rung: str, artifact: str) -> str:
    """The name of a rung's artifact in the run (task ids, folders, reports, releases)."""
    return f"{rung}{RUNG_SEPARATOR}{artifact}"


def rung_of(artifact: str) -> str:
    """The rung an artifact of a search belongs to (the trained model's is `train`)."""
    return artifact.split(RUNG_SEPARATOR, 1)[0] if RUNG_SEPARATOR in artifact else TRAINED


class SearchTarget(StrictModel):
    """What the search tries to reach. Sizes are gzip bytes (each file gzipped, summed: what a download costs);
    latency is validate's batch-1 p50 in the artifact's own runtime, with evaluation.threads threads."""

    max_size_ratio: float | None = Field(None, gt=0, description="gzip size at most this share of the trained SavedModel's (0.1 = 10x smaller)")
    max_gzip_bytes: int | None = Field(None, gt=0, description="gzip size at most this many bytes")
    max_latency_ms: float | None = Field(None, gt=0, description="batch-1 p50 latency at most this many milliseconds")
    min_speedup: float | None = Field(None, gt=0, description="batch-1 p50 at least this many times faster than the trained SavedModel in TensorFlow")
    format: str | None = Field(
        None, description="only artifacts of this format count (its runtime is where latency is measured); default: any"
    )

    @model_validator(mode="after")
    def _something_to_reach(self) -> SearchTarget:
        if all(getattr(self, key) is None for key in LIMITS):
            raise ValueError(f"the target is empty; set one or more of {', '.join(LIMITS)}")
        return self

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in TARGET_FORMATS:
            close = difflib.get_close_matches(value, TARGET_FORMATS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(TARGET_FORMATS)}"
            raise ValueError(f"unknown format '{value}'; {hint}")
        return value

    def limits(self) -> dict[str, float]:
        """The limits set, by name."""
        return {key: getattr(self, key) for key in LIMITS if getattr(self, key) is not None}


# target key -> (the measure it limits, True when the measure must stay at or below the limit)
LIMITS: dict[str, tuple[str, bool]] = {
    "max_size_ratio": ("size_ratio", True),
    "max_gzip_bytes": ("size_gzip_bytes", True),
    "max_latency_ms": ("latency_ms_p50", True),
    "min_speedup": ("speedup", False),
}


class Rung(StrictModel):
    name: str = Field(..., pattern=RUNG_PATTERN, description="the rung's name; its artifacts are named <name>-<artifact>")
    compress: list[TechniqueSpec] = Field(
        ..., min_length=1, description="the recipe: compress entries as in a workflow's compress list, from the trained model"
    )

    def recipe(self) -> str:
        """The recipe in one line, e.g. 'prune(sparsity=0.5) -> quantize(mode=int8)'."""
        return " -> ".join(f"{t.technique}({', '.join(f'{k}={v}' for k, v in t.params.items())})" for t in self.compress)


def _rung(name: str, *compress: dict[str, Any]) -> Rung:
    return Rung(name=name, compress=[TechniqueSpec.model_validate(entry) for entry in compress])


INT8 = {"technique": "quantize", "mode": "int8"}
# Cheapest first: a conversion, then quantization-aware fine-tuning, then pruning (fine-tuned) before it, then
# removing half the channels and neurons of every layer and recovering by distillation from the unpruned model, before
# the conversion.
STRUCTURED_DISTILL = {"technique": "prune", "method": "structured", "ratio": 0.5, "teacher": True}
DEFAULT_LADDER = (
    _rung("ptq_int8", INT8),
    _rung("qat_int8", {"technique": "quantize", "mode": "qat"}, INT8),
    _rung("prune_qat_int8", {"technique": "prune", "sparsity": 0.5}, {"technique": "quantize", "mode": "pqat"}, INT8),
    _rung("structured_distill_int8", STRUCTURED_DISTILL, INT8),
)


class SearchSpec(StrictModel):
    target: SearchTarget = Field(..., description="what to reach: size, latency, or both")
    ladder: list[Rung] = Field(
        default_factory=lambda: [rung.model_copy(deep=True) for rung in DEFAULT_LADDER],
        min_length=1,
        description="recipes tried in order, cheapest first; default: PTQ int8, QAT int8, prune + PQAT int8, structured prune distilled from the trained model + int8",
    )
    publish_closest: bool = Field(
        False, description="when no recipe meets the target, publish the closest blessed artifact anyway (default: publish nothing)"
    )

    @field_validator("ladder")
    @classmethod
    def _distinct_rungs(cls, value: list[Rung]) -> list[Rung]:
        names = [rung.name for rung in value]
        for name in names:
            if name == TRAINED:
                raise ValueError(f"a rung is named '{TRAINED}', the trained model's name; rename it")
            if names.count(name) > 1:
                raise ValueError(f"two rungs are named '{name}'; name each rung once")
        return value

    def rung_names(self) -> list[str]:
        """The trained model first, then the ladder: the order the search tries them in."""
        return [TRAINED, *(rung.name for rung in self.ladder)]
