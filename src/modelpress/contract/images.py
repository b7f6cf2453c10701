"""Container images: the pip extras each image carries, its tag, and the image a task runs in.

A task's image follows from what it needs: its step's extras plus those of the target format it converts or
validates (formats.FORMATS). It runs in the smallest dependency set that carries all of them, so a placement cannot
name an image that lacks a library (tests/kubernetes/test_image_build_containers.py imports every need inside every built image).
containers/build.py builds one image per set from containers/Dockerfile; the adapters and containers/build.py both
name images through `image_for`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

from modelpress import __version__
from modelpress.common.errors import UserError

IMAGE_REPOSITORY = os.environ.get("MODELPRESS_IMAGE_REPOSITORY", "ghcr.io/modelpress")

# Every image carries these (one shared layer, pulled once per node): object storage, and the TF Serving API that
# deploy speaks (tensorflow-serving-api brings TensorFlow itself).
COMMON_EXTRAS = ("s3", "serving")
# Dependency set -> the pip extras of pyproject.toml its image installs.
DEPENDENCY_SETS: dict[str, tuple[str, ...]] = {
    "base": COMMON_EXTRAS,
    "tf": (*COMMON_EXTRAS, "tf", "onnx"),
    "openvino": (*COMMON_EXTRAS, "tf", "openvino"),
    "tensorrt": (*COMMON_EXTRAS, "tf", "onnx", "tensorrt"),
}
# Images that run an orchestrator, not steps (never a task's placement): Airflow's scheduler and workers with the
# adapter. Their own constraints file: kfp and the current Airflow Kubernetes provider cannot share one environment.
ORCHESTRATOR_SETS: dict[str, tuple[str, ...]] = {"airflow": ("airflow", "s3")}
ORCHESTRATOR_CONSTRAINTS = {"airflow": "constraints-airflow.txt"}
# Sets that also have a CUDA build, tagged <version>-gpu, for their GPU steps: the same image plus the `gpu` extra
# (TensorFlow's CUDA wheels). The tensorrt set is GPU-only: its TensorRT wheels bring CUDA.
GPU_VARIANT_SETS = ("tf",)
GPU_EXTRA = "gpu"
GPU_TAG_SUFFIX = "-gpu"
# Sets whose image pins more than constraints.txt (a file in the repository, relative to its root).
SET_CONSTRAINTS = {"tensorrt": "containers/tensorrt/constraints.txt"}
# What `import` proves an extra is installed and loads in an image (its native libraries included).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "s3": ("boto3", "google_crc32c"),
    "serving": ("grpc", "requests", "tensorflow_serving.apis.prediction_service_pb2_grpc"),
    "tf": ("tensorflow", "tf_keras", "tensorflow_model_optimization", "sklearn", "matplotlib", "keras_tuner", "PIL", "ai_edge_litert"),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
    "openvino": ("openvino", "nncf"),
    "tensorrt": ("tensorrt", "cuda"),
    "airflow": ("airflow.providers.cncf.kubernetes.operators.pod", "modelpress.airflow.dag_factory"),
    GPU_EXTRA: (),
}


def extras_of(dependency_set: str, *, gpu: bool = False) -> tuple[str, ...]:
    """The extras an image installs: its set's, plus the CUDA wheels for a GPU variant."""
    check_set(dependency_set)
    extras = {**DEPENDENCY_SETS, **ORCHESTRATOR_SETS}[dependency_set]
    return (*extras, GPU_EXTRA) if gpu and dependency_set in GPU_VARIANT_SETS else extras


def check_set(dependency_set: str) -> None:
    if dependency_set not in DEPENDENCY_SETS and dependency_set not in ORCHESTRATOR_SETS:
        raise UserError(
            f"no image for dependency set '{dependency_set}'; known sets: {', '.join([*DEPENDENCY_SETS, *ORCHESTRATOR_SETS])}"
            " (add it to DEPENDENCY_SETS in src/modelpress/contract/images.py)"
        )


def image_for(
    dependency_set: str, version: str = __version__, repository: str | None = None, *, gpu: bool = False, tag: str | None = None
) -> str:
    """The image of a dependency set, its CUDA variant when `gpu` and the set has one. `repository` and `tag` (a
    workflow's kubernetes.image_repository and kubernetes.image_tag, e.g. a derived image with a team's builder package)
    replace the default registry part and the version."""
    check_set(dependency_set)
    suffix = GPU_TAG_SUFFIX if gpu and dependency_set in GPU_VARIANT_SETS else ""
    return f"{(repository or IMAGE_REPOSITORY).rstrip('/')}/modelpress-{dependency_set}:{tag or version}{suffix}"


def dependency_set_for(extras: Iterable[str]) -> str:
    """The smallest dependency set whose image carries every extra named."""
    wanted = set(extras)
    fitting = [name for name, carried in DEPENDENCY_SETS.items() if wanted <= set(carried)]
    if not fitting:
        raise UserError(f"no image carries all of {', '.join(sorted(wanted))}; add a set to DEPENDENCY_SETS")
    return min(fitting, key=lambda name: len(DEPENDENCY_SETS[name]))


class Placement(NamedTuple):
    """Where a task runs on the cluster: the dependency set of its image and whether it asks for a GPU."""

    dependency_set: str
    gpu: bool

    def image(self, repository: str | None = None, tag: str | None = None) -> str:
        return image_for(self.dependency_set, repository=repository, gpu=self.gpu, tag=tag)

    @property
    def extras(self) -> tuple[str, ...]:
        return extras_of(self.dependency_set, gpu=self.gpu)

    @property
    def label(self) -> str:
        """A short name for task ids: the set, `_gpu` for a GPU variant."""
        return self.dependency_set + ("_gpu" if self.gpu and self.dependency_set in GPU_VARIANT_SETS else "")


def placement_for(extras: Iterable[str], gpu: bool) -> Placement:
    return Placement(dependency_set_for(extras), gpu)
