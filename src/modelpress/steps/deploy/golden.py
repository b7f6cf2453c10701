"""What both deploy paths (TF Serving and KServe) check a served model against: the validation's golden rows."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from modelpress.common.errors import StepFailed, UserError
from modelpress.io import storage
from modelpress.io.artifacts import Blessing, read_blessing

DEPLOYMENT_FILE = "deployment.json"


def read_validation(uri: str) -> tuple[Blessing, np.ndarray, np.ndarray]:
    blessing, _ = read_blessing(uri)
    golden_uri = storage.join(uri, "golden.npz")
    if not storage.exists(golden_uri):
        raise UserError(f"{uri} has no golden.npz (validated outputs for the smoke test); validate the model again")
    try:
        with np.load(io.BytesIO(storage.read_bytes(golden_uri)), allow_pickle=False) as golden:
            return blessing, golden["inputs"], golden["outputs"]
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{golden_uri} is unreadable ({' '.join(str(exc).split())[:120]}); validate the model again") from None


def served_model(inputs: dict[str, str]) -> str:
    """The artifact to deploy: the `model` input, else the one its validation names (a search's selection)."""
    return inputs.get("model") or read_blessing(inputs["validation"])[0].artifact


def compare_outputs(actual: np.ndarray, expected: np.ndarray, tolerance: float, what: str) -> float:
    """Largest absolute difference; StepFailed when it exceeds the tolerance or the shapes differ."""
    if actual.shape != expected.shape:
        raise StepFailed(f"{what} have shape {actual.shape}, the validated outputs {expected.shape}")
    worst = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if actual.size else 0.0
    if worst > tolerance:
        raise StepFailed(f"{what} differ from the validated outputs by up to {worst:.3g} (serving.tolerance {tolerance:g})")
    return worst
