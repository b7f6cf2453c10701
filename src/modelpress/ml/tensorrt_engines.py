"""TensorRT engines at run time: the GPU a process sees, and the tag that binds an engine to the GPU model and
TensorRT version it was built for (convert writes the tag, the runtimes check it)."""

from __future__ import annotations

from dataclasses import dataclass

from modelpress.common.errors import BackendMissing, StepFailed, UserError, require

ENGINE_FILE = "model.engine"
SOURCE_ONNX_FILE = "model.onnx"
# The label NVIDIA's GPU feature discovery puts on a node: the product name with spaces as dashes.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Tag fields an engine must match on the node that runs it.
BINDING_FIELDS = ("gpu_name", "compute_capability", "tensorrt_version")


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # e.g. "7.5"
    cuda_runtime_version: str
    cuda_driver_version: str


def cudart():
    """CUDA runtime bindings (cuda-python), the library TensorRT's own samples use for device memory."""
    return require("cuda.bindings.runtime", "tensorrt")


def cuda_call(result, what: str):
    """cuda-python returns (error, *values): raise on error, return the value(s)."""
    error, *values = result
    if int(error) != 0:
        raise StepFailed(f"CUDA {what} failed: {getattr(error, 'name', error)}")
    return values[0] if len(values) == 1 else tuple(values)


def cuda_version(number: int) -> str:
    """CUDA's integer version (e.g. 12090) as major.minor."""
    return f"{number // 1000}.{number % 1000 // 10}"


def unavailable_reason() -> str | None:
    """Why TensorRT engines cannot be built or run on this node, or None when they can."""
    try:
        runtime = cudart()
    except BackendMissing as exc:
        return str(exc)
    error, count = runtime.cudaGetDeviceCount()
    if int(error) != 0 or count == 0:
        detail = getattr(error, "name", str(error)) if int(error) != 0 else "0 devices"
        return f"no CUDA GPU on this node ({detail})"
    try:
        require("tensorrt", "tensorrt")
    except BackendMissing as exc:
        return str(exc)
    return None


def current_gpu() -> Gpu:
    runtime = cudart()
    device = cuda_call(runtime.cudaGetDevice(), "cudaGetDevice")
    properties = cuda_call(runtime.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
    return Gpu(
        name=name.rstrip("\x00").strip(),
        compute_capability=f"{properties.major}.{properties.minor}",
        cuda_runtime_version=cuda_version(cuda_call(runtime.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
        cuda_driver_version=cuda_version(cuda_call(runtime.cudaDriverGetVersion(), "cudaDriverGetVersion")),
    )


def engine_tag(gpu: Gpu, tensorrt_version: str) -> dict:
    """What an engine is bound to, for artifact.json and for scheduling it onto the right node pool."""
    return {
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "tensorrt_version": tensorrt_version,
        "cuda_runtime_version": gpu.cuda_runtime_version,
        "cuda_driver_version": gpu.cuda_driver_version,
        "node_selector": {GPU_PRODUCT_LABEL: "-".join(gpu.name.split())},
    }


def check_engine_tag(tag: dict, gpu: Gpu, tensorrt_version: str) -> None:
    """Refuse to run an engine on a node it was not built for."""
    here = engine_tag(gpu, tensorrt_version)
    wrong = [f"{key} {tag.get(key)!r} != {here[key]!r}" for key in BINDING_FIELDS if tag.get(key) != here[key]]
    if wrong:
        raise UserError(
            f"this TensorRT engine was built for another node ({'; '.join(wrong)}); schedule it with node selector "
            f"{tag.get('node_selector')} or rebuild it from its {SOURCE_ONNX_FILE} on this node pool"
        )
