"""Run an artifact in its own runtime: one runner per artifact format family.

A runner takes float32 inputs in the data's layout and returns class probabilities (or scores) as numpy, and names
its `runtime`. The convert step runs the same runners to check a conversion before writing it.

Threads: every CPU runner computes with the thread count it is given (`threads`, the workflow's evaluation.threads),
so latencies of different runtimes compare; None leaves the runtime's own default (convert's checks, not timed).
A runner's `threads` attribute is the count it really runs with: None when that is the runtime's default or, for
TensorFlow, when its thread pools were sized earlier in the process (they cannot change once TensorFlow runs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelpress.common.errors import UserError, require
from modelpress.common.tf import import_tensorflow
from modelpress.contract.formats import FORMATS
from modelpress.io.artifacts import ArtifactMeta


def interpreter(model_content: bytes | None = None, model_path: str | None = None, num_threads: int | None = None):
    """The LiteRT interpreter of a .tflite model; num_threads None leaves LiteRT's default."""
    litert = require("ai_edge_litert.interpreter", "tf")
    return litert.Interpreter(model_content=model_content, model_path=model_path, num_threads=num_threads)


class SavedModelRunner:
    """The SavedModel's serving signature in TensorFlow: what TF Serving on CPU runs."""

    runtime = "tensorflow"

    def __init__(self, model_path: Path, threads: int | None = None):
        tf = import_tensorflow()
        self.threads = threads if threads is not None and fix_tf_threads(tf, threads) else None
        loaded = tf.saved_model.load(str(model_path))
        if "serving_default" not in loaded.signatures:
            raise UserError(f"{model_path} has no serving_default signature; export it with a serving signature")
        self._keep = loaded
        self._function = loaded.signatures["serving_default"]
        (self._input_name,) = list(self._function.structured_input_signature[1].keys())
        self._tf = tf

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._function(**{self._input_name: self._tf.constant(batch, dtype=self._tf.float32)})
        return next(iter(outputs.values())).numpy()


def fix_tf_threads(tf, threads: int) -> bool:
    """Size TensorFlow's intra- and inter-op pools; False when TensorFlow already runs with other sizes."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # "cannot be modified after initialization": this process already ran TensorFlow
        return False
    return True


class TFLiteRunner:
    """A .tflite model in LiteRT (`ai_edge_litert`), computing with `threads` CPU threads. Integer I/O is quantized
    and dequantized with the model's own scale and zero point, so callers always pass and get floats."""

    runtime = "litert"

    def __init__(self, model_path: Path, threads: int | None = None):
        self.threads = threads
        self._interpreter = interpreter(model_path=str(model_path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if tuple(self._input["shape"]) != batch.shape:  # resizing reallocates: only when the batch size changes
            self._interpreter.resize_tensor_input(self._input["index"], batch.shape)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._output = self._interpreter.get_output_details()[0]
        self._interpreter.set_tensor(self._input["index"], to_model_dtype(batch, self._input))
        self._interpreter.invoke()
        return from_model_dtype(self._interpreter.get_tensor(self._output["index"]), self._output)


def to_model_dtype(batch: np.ndarray, tensor: dict) -> np.ndarray:
    dtype = np.dtype(tensor["dtype"])
    if dtype.kind == "f":
        return batch.astype(dtype)
    scale, zero_point = tensor["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)


def from_model_dtype(values: np.ndarray, tensor: dict) -> np.ndarray:
    if np.dtype(tensor["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = tensor["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


class OpenVINORunner:
    """The OpenVINO runtime on CPU with its documented latency setup: the LATENCY performance hint, a static input
    shape per batch size (compiled on first use of that size: batch-1 calls run a batch-1 model, not a dynamic one)
    and input tensors sharing the caller's memory. Float parts run in f32: on CPUs with bfloat16 units OpenVINO would
    otherwise compute in bf16 and an FP32 IR would not behave like its parent."""

    runtime = "openvino"

    def __init__(self, model_path: Path, threads: int | None = None, layer_counters: bool = False):
        ov = require("openvino", "openvino")
        self.threads = threads
        self._core = ov.Core()
        self._model = self._core.read_model(str(model_path))
        # One stream: the synchronous request below uses one; more streams would only split the threads.
        self._settings = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"} | (
            {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1} if threads else {}
        ) | ({"PERF_COUNT": True} if layer_counters else {})  # per-layer times in each request's profiling_info
        self._requests: dict[tuple[int, ...], object] = {}  # input shape -> infer request of the model compiled for it

    def request(self, shape: tuple[int, ...]):
        """The infer request of the model compiled for this static input shape."""
        if shape not in self._requests:
            model = self._model.clone()
            model.reshape(list(shape))
            self._requests[shape] = self._core.compile_model(model, "CPU", self._settings).create_infer_request()
        return self._requests[shape]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outputs = self.request(batch.shape).infer({0: batch}, share_inputs=True, share_outputs=True)
        return np.array(outputs[0])  # a copy: shared outputs are overwritten by the next call


class OnnxRunner:
    """onnxruntime's CPU execution provider."""

    runtime = "onnxruntime"

    def __init__(self, model_path: Path, threads: int | None = None):
        ort = require("onnxruntime", "onnx")
        self.threads = threads
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch.astype(np.float32)})[0]


class TensorRTRunner:
    """A serialized TensorRT engine on the node's GPU, refused when the node is not the one it was built for.
    Batches larger than the engine's profile allows are run in chunks. It computes on the GPU: no CPU thread count."""

    runtime = "tensorrt"
    threads = None

    def __init__(self, model_path: Path, meta: ArtifactMeta):
        from modelpress.ml import tensorrt_engines as engines

        trt = require("tensorrt", "tensorrt")
        engines.check_engine_tag(meta.details.get("engine_tag", {}), engines.current_gpu(), trt.__version__)
        self._cuda, self._call = engines.cudart(), engines.cuda_call
        self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(model_path.read_bytes())
        if self._engine is None:
            raise UserError(f"{model_path} is not a TensorRT engine this TensorRT version can load; rebuild it")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._max_batch = int(self._engine.get_tensor_profile_shape(self._input, 0)[2][0])
        self._stream = self._call(self._cuda.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, capacity in bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if pointer:
                self._call(self._cuda.cudaFree(pointer), "cudaFree")
            pointer = self._call(self._cuda.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        cuda, call = self._cuda, self._call
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        self._context.set_input_shape(self._input, chunk.shape)
        result = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=np.float32)
        source, target = self._device_buffer(self._input, chunk.nbytes), self._device_buffer(self._output, result.nbytes)
        kinds = cuda.cudaMemcpyKind
        call(cuda.cudaMemcpyAsync(source, chunk.ctypes.data, chunk.nbytes, kinds.cudaMemcpyHostToDevice, self._stream), "copy in")
        self._context.set_tensor_address(self._input, source)
        self._context.set_tensor_address(self._output, target)
        if not self._context.execute_async_v3(self._stream):
            raise UserError("TensorRT could not run the engine on this batch")
        call(cuda.cudaMemcpyAsync(result.ctypes.data, target, result.nbytes, kinds.cudaMemcpyDeviceToHost, self._stream), "copy out")
        call(cuda.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return result

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(batch[i : i + self._max_batch]) for i in range(0, len(batch), self._max_batch)])

    def __del__(self):
        for pointer, _ in getattr(self, "_buffers", {}).values():
            self._cuda.cudaFree(pointer)


# format family (contract/formats.py) -> runner(folder, meta, threads)
RUNNERS: dict[str, Callable[[Path, ArtifactMeta, int | None], object]] = {
    "saved_model": lambda folder, meta, threads: SavedModelRunner(folder / meta.model_path, threads),
    "tflite": lambda folder, meta, threads: TFLiteRunner(folder / meta.model_path, threads),
    "openvino": lambda folder, meta, threads: OpenVINORunner(folder / meta.model_path, threads),
    "onnx": lambda folder, meta, threads: OnnxRunner(folder / meta.model_path, threads),
    "tensorrt": lambda folder, meta, threads: TensorRTRunner(folder / meta.model_path, meta),
}


def load_runner(folder: Path, meta: ArtifactMeta, threads: int | None = None):
    """The runner of an artifact's format family (contract/formats.py)."""
    known = FORMATS.get(meta.format)
    factory = RUNNERS.get(known.family) if known else None
    if factory is None:
        raise UserError(f"no runtime to validate format '{meta.format}'; known: {', '.join(FORMATS)}")
    return factory(folder, meta, threads)
