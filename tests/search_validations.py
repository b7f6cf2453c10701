"""Validations as validate writes them (blessing.json), with chosen measures: what the search's bookkeeping, the search
step and the select step read. Shared by their tests."""

from __future__ import annotations

from pathlib import Path

from modelpress.contract.search import SearchSpec
from modelpress.io.artifacts import Blessing

TRAINED = {"size_gzip_bytes": 20_000, "latency_ms_p50": 1.0, "accuracy": 0.96}


def write_validation(root: Path, name: str, fmt: str = "tflite_int8", blessed: bool = True, **metrics) -> str:
    """A validation folder of artifact `name`; metrics default to the trained model's."""
    folder = root / "validation" / name
    folder.mkdir(parents=True)
    reasons = [] if blessed else ["accuracy drop 2.00 pp vs train exceeds max_drop 1.00 pp"]
    blessing = Blessing(
        name=name, artifact=str(root / "artifacts" / name), artifact_digest="0" * 64, format=fmt, runtime="tflite",
        blessed=blessed, reasons=reasons, metrics={**TRAINED, **metrics}, thresholds={"max_drop": 0.01},
        gates=[{"gate": "max_drop", "threshold": 0.01, "value": 0.0 if blessed else 0.02, "passed": blessed, "reason": None if blessed else reasons[0]}],
    )  # fmt: skip
    (folder / "blessing.json").write_text(blessing.model_dump_json())
    (folder / "golden.npz").write_bytes(b"golden rows of " + name.encode())
    return str(folder)


def spec(target: dict, rungs: tuple[str, ...] = ("ptq", "qat"), **options) -> SearchSpec:
    """A search of `rungs` (each a one-entry recipe) for `target`."""
    ladder = [{"name": rung, "compress": [{"technique": "quantize", "mode": "int8"}]} for rung in rungs]
    return SearchSpec.model_validate({"target": target, "ladder": ladder, **options})
