"""Model files are checked before a runtime touches them: format magic, size, a parse, and for runtimes that can
crash the process on bad bytes (the TFLite interpreter segfaults on a truncated flatbuffer) a trial load in a
child process. Corrupt input is one clear line, never a crash or a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelpress.common.errors import UserError
from modelpress.io.artifacts import ArtifactMeta

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8
TFLITE_TRIAL_TIMEOUT_S = 120
# Opens the model, allocates its tensors and runs it once on zeros: what validate is about to do, in a process
# whose crash cannot take the step with it.
TFLITE_TRIAL = """
import sys
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
for tensor in interpreter.get_input_details():
    interpreter.set_tensor(tensor["index"], np.zeros(tensor["shape"], tensor["dtype"]))
interpreter.invoke()
"""


def check_model_files(folder: Path, meta: ArtifactMeta) -> None:
    """Raise a UserError naming the file and the fix when the artifact's model files cannot be run safely."""
    path = folder / meta.model_path
    family = meta.format.split("_")[0]
    if not path.exists():
        raise UserError(f"{path} is missing; the artifact is damaged: re-run the step that makes it")
    if family == "saved" or meta.format == "saved_model":
        check_saved_model(path)
        if (folder / "model.h5").exists():
            check_magic(folder / "model.h5", HDF5_MAGIC, 0, "an HDF5 Keras model")
    elif family == "tflite":
        check_tflite(path)
    elif family == "onnx":
        check_onnx(path)
    elif family == "openvino":
        check_openvino(path)


def broken(path: Path, what: str, why: str) -> UserError:
    return UserError(f"{path} is not {what} ({why}); the artifact is damaged or was not written by ModelPress: re-run the step that makes it")


def check_magic(path: Path, magic: bytes, offset: int, what: str) -> None:
    if not path.is_file():
        raise broken(path, what, "not a file")
    with open(path, "rb") as handle:
        handle.seek(offset)
        if handle.read(len(magic)) != magic:
            raise broken(path, what, "wrong format signature")


def check_saved_model(path: Path) -> None:
    """saved_model.pb parses, and every variable in the checkpoint reads back in full."""
    from modelpress.common.tf import import_tensorflow

    tf = import_tensorflow()
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    what = "a TensorFlow SavedModel"
    graph = path / "saved_model.pb"
    if not graph.is_file():
        raise broken(path, what, "no saved_model.pb")
    try:
        saved = saved_model_pb2.SavedModel.FromString(graph.read_bytes())
    except DecodeError as exc:
        raise broken(graph, what, f"does not parse: {exc}") from None
    if not saved.meta_graphs:
        raise broken(graph, what, "no meta graph")
    index = path / "variables" / "variables.index"
    if not index.is_file():
        return  # a model without variables
    try:
        reader = tf.train.load_checkpoint(str(index.with_suffix("")))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError) as exc:
        raise broken(path / "variables", "a readable checkpoint", " ".join(str(exc).split())[:160]) from None


def check_tflite(path: Path) -> None:
    what = "a TFLite flatbuffer"
    check_magic(path, TFLITE_IDENTIFIER, 4, what)
    if path.stat().st_size < 32:
        raise broken(path, what, f"only {path.stat().st_size} bytes")
    try:
        trial = subprocess.run(
            [sys.executable, "-c", TFLITE_TRIAL, str(path)], capture_output=True, text=True, timeout=TFLITE_TRIAL_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise broken(path, what, f"the interpreter did not finish one run in {TFLITE_TRIAL_TIMEOUT_S}s") from None
    if trial.returncode < 0:
        raise broken(path, what, f"the TFLite interpreter crashed on it with signal {-trial.returncode}")
    if trial.returncode != 0:
        lines = [line for line in trial.stderr.splitlines() if line.strip()]
        raise broken(path, what, lines[-1][:160] if lines else f"exit code {trial.returncode}")


def check_onnx(path: Path) -> None:
    from modelpress.common.errors import require

    onnx = require("onnx", "onnx")
    from google.protobuf.message import DecodeError

    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, DecodeError, ValueError, OSError) as exc:
        raise broken(path, "an ONNX model", " ".join(str(exc).split())[:160]) from None


def check_openvino(path: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    what = "an OpenVINO IR"
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise broken(path, what, f"the .xml does not parse: {exc}") from None
    if root.tag != "net":
        raise broken(path, what, f"root element <{root.tag}>, expected <net>")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise broken(weights, what, "the weights file beside the .xml is missing")
