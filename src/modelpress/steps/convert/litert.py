"""LiteRT quantization (the `tflite_litert` target): ai-edge-quantizer rewrites the float .tflite by a recipe.

A recipe is a preset name or a list of rules. Each rule picks layers by a regular expression searched in the names of
the TFLite ops' output tensors (the converter names them after the Keras layers, e.g. `model/hidden/MatMul;...`) and
says how their weights (int8, int4) and activations are quantized:
  dynamic  activations stay float32 in the model and are quantized on the fly: integer kernels (the default)
  float    weight-only: weights are dequantized before the op, which computes in float
  int8     static: activations quantized with ranges calibrated on the calibration subset
  int16    static, 16-bit activations (int8 or int4 weights)
Rules apply in order; for a layer two rules match, the later one wins.

After quantizing, ai-edge-quantizer compares every tensor of the quantized model with the float model's on a few
calibration rows; that per-layer error report is written beside the model (LAYER_ERRORS_FILE).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelpress.common.errors import UserError, require
from modelpress.io.artifacts import LAYER_ERRORS_FILE

WEIGHT_BITS = {"int8": 8, "int4": 4}
ACTIVATIONS = ("dynamic", "float", "int8", "int16")
GRANULARITIES = ("channelwise", "tensorwise")
# Rows the per-layer comparison runs (each row runs both models keeping every tensor): enough to rank the layers.
LAYER_ERROR_ROWS = 32
LAYER_ERROR_METRICS = ("mse", "cosine_similarity")


@dataclass(frozen=True)
class LayerRule:
    weights: str
    layers: str = ".*"
    activations: str = "dynamic"
    granularity: str = "channelwise"

    @property
    def static(self) -> bool:
        return self.activations in ("int8", "int16")


PRESETS: dict[str, tuple[LayerRule, ...]] = {
    "int8_weights": (LayerRule("int8"),),
    "int4_weights": (LayerRule("int4"),),
    "int8": (LayerRule("int8", activations="int8"),),
    "int16_activations": (LayerRule("int8", activations="int16"),),
}
RULE_KEYS = tuple(LayerRule.__dataclass_fields__)


def _choice(where: str, key: str, value: Any, allowed) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"{where}: {key} {value!r} is not supported; {hint}use {', '.join(allowed)}")
    return value


def parse_rule(position: int, entry: Any) -> LayerRule:
    where = f"rule {position}"  # shown after the key: "recipe: rule 2: ..."
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: give a mapping like {{layers: 'dense', weights: int4}}, not {entry!r}")
    for key in entry:
        if key not in RULE_KEYS:
            close = difflib.get_close_matches(str(key), RULE_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"keys: {', '.join(RULE_KEYS)}"
            raise ValueError(f"{where}: unknown key '{key}'; {hint}")
    if "weights" not in entry:
        raise ValueError(f"{where}: weights is missing; set weights: int8 or int4")
    layers = entry.get("layers", ".*")
    if not isinstance(layers, str):
        raise ValueError(f"{where}: layers must be a regular expression string, not {layers!r}")
    try:
        re.compile(layers)
    except re.error as exc:
        raise ValueError(f"{where}: layers {layers!r} is not a regular expression ({exc})") from None
    return LayerRule(
        weights=_choice(where, "weights", entry["weights"], WEIGHT_BITS),
        layers=layers,
        activations=_choice(where, "activations", entry.get("activations", "dynamic"), ACTIVATIONS),
        granularity=_choice(where, "granularity", entry.get("granularity", "channelwise"), GRANULARITIES),
    )


def parse_recipe(recipe: Any) -> tuple[LayerRule, ...]:
    """The rules of a recipe (a preset name or a list of rule mappings); ValueError with one line when it is wrong
    (the config reports it under its key: `recipe: rule 2: unknown key 'layer'; did you mean 'layers'?`)."""
    if isinstance(recipe, str):
        if recipe not in PRESETS:
            close = difflib.get_close_matches(recipe, list(PRESETS), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown preset '{recipe}'; {hint}presets: {', '.join(PRESETS)}, or a list of rules ({', '.join(RULE_KEYS)})")
        return PRESETS[recipe]
    if not isinstance(recipe, list) or not recipe:
        raise ValueError(f"give a preset ({', '.join(PRESETS)}) or a non-empty list of rules ({', '.join(RULE_KEYS)})")
    return tuple(parse_rule(position, entry) for position, entry in enumerate(recipe, start=1))


def op_output_names(model_content: bytes) -> list[str]:
    """Names of the tensors the model's ops write: what a rule's `layers` expression is searched in."""
    from modelpress.ml.runtimes import interpreter

    reader = interpreter(model_content=model_content)
    names = {t["index"]: t["name"] for t in reader.get_tensor_details()}
    return [names[i] for op in reader._get_ops_details() for i in op["outputs"] if i >= 0]


def check_rules_match(rules: tuple[LayerRule, ...], outputs: list[str], layer_names: list[str]) -> None:
    """A rule matching no op is a typo, not a no-op: refuse it naming the model's layers."""
    for position, rule in enumerate(rules, start=1):
        if not any(re.search(rule.layers, name) for name in outputs):
            raise UserError(
                f"recipe rule {position}: layers {rule.layers!r} matches no layer of the model; "
                f"its layers are {', '.join(layer_names)}"
            )


def build_quantizer(float_content: bytes, rules: tuple[LayerRule, ...]):
    aeq = require("ai_edge_quantizer.quantizer", "tf")
    from ai_edge_quantizer import qtyping

    quantizer = aeq.Quantizer(float_content)
    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    for rule in rules:
        bits, granularity = WEIGHT_BITS[rule.weights], qtyping.QuantGranularity[rule.granularity.upper()]
        if rule.static:
            quantizer.add_static_config(rule.layers, every_op, int(rule.activations[3:]), bits, granularity)
        elif rule.activations == "float":
            quantizer.add_weight_only_config(rule.layers, every_op, bits, granularity)
        else:
            quantizer.add_dynamic_config(rule.layers, every_op, bits, granularity)
    return quantizer


def signature_inputs(float_content: bytes, rows: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """Rows as ai-edge-quantizer's calibration/test data: one single-row input per row, for the serving signature."""
    from modelpress.ml.runtimes import interpreter

    (signature, spec), = interpreter(model_content=float_content).get_signature_list().items()
    (name,) = spec["inputs"]
    return {signature: [{name: row[None].astype(np.float32)} for row in rows]}


def layer_error_report(comparison, rows: int) -> dict:
    """ai-edge-quantizer's comparison as JSON: per tensor kind, tensor name -> error metrics; worst layers first."""
    (signature,) = comparison.available_signature_keys()
    result = comparison.get_signature_comparison_result(signature)

    def by_error(tensors: dict) -> dict:
        return dict(sorted(tensors.items(), key=lambda item: -item[1]["mse"]))

    return {
        "compared_rows": rows,
        "metrics": list(LAYER_ERROR_METRICS),
        "signature": signature,
        "output_tensors": by_error(result.output_tensors),
        "intermediate_tensors": by_error(result.intermediate_tensors),
        "constant_tensors": by_error(result.constant_tensors),
    }


def quantize(float_content: bytes, recipe: Any, calibration: np.ndarray, layer_names: list[str], folder: Path) -> tuple[bytes, dict]:
    """The quantized .tflite and the artifact details; writes LAYER_ERRORS_FILE into the folder."""
    rules = parse_recipe(recipe)
    check_rules_match(rules, op_output_names(float_content), layer_names)
    quantizer = build_quantizer(float_content, rules)  # imports ai_edge_quantizer, or says which extra installs it
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric

    data = signature_inputs(float_content, calibration)
    calibrated = quantizer.calibrate(data, num_threads=1) if quantizer.need_calibration else None
    quantized = bytes(quantizer.quantize(calibrated, enable_progress_report=False).quantized_model)
    compared = {key: rows[:LAYER_ERROR_ROWS] for key, rows in data.items()}
    comparison = quantizer.validate(
        compared, error_metrics=[ValidationErrorMetric(m) for m in LAYER_ERROR_METRICS], num_threads=1
    )
    report = layer_error_report(comparison, min(len(calibration), LAYER_ERROR_ROWS))
    (folder / LAYER_ERRORS_FILE).write_text(json.dumps(report, indent=2))
    details = {
        "recipe": [asdict(rule) for rule in rules],
        "calibrated": calibrated is not None,
        "float_size_bytes": len(float_content),
        "layer_errors": LAYER_ERRORS_FILE,
    }
    return quantized, details
