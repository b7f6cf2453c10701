"""OpenVINO IR (model.xml + model.bin) from the Keras model: FP32 or FP16 weights, or INT8 through nncf.quantize
(post-training quantization calibrated on a hashed subset of the training split)."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from modelpress.common.errors import require
from modelpress.steps.convert.config import ConvertConfig

XML_FILE = "model.xml"
BIN_FILE = "model.bin"  # save_model writes the weights beside the .xml, same stem


def convert(model, config: ConvertConfig, calibration: np.ndarray | None, folder: Path) -> tuple[list[str], dict]:
    ov = require("openvino", "openvino")
    ir = ov.convert_model(model)
    if config.format == "openvino_int8":
        nncf = require("nncf", "openvino")
        samples = nncf.Dataset(list(calibration), lambda row: row[None])
        with contextlib.redirect_stdout(sys.stderr):  # nncf's progress bars: stdout carries the run's table
            ir = nncf.quantize(ir, samples, subset_size=len(calibration))
    ov.save_model(ir, folder / XML_FILE, compress_to_fp16=config.format == "openvino_fp16")
    ops = Counter(op.get_type_name() for op in ir.get_ops())
    return [XML_FILE, BIN_FILE], {"ops": dict(sorted(ops.items()))}
