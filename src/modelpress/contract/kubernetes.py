"""The kubernetes section: where steps run on a cluster (namespace, images, GPU pool, Secret, training operator,
tuner, each step's CPU, memory and time)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelpress.contract.schema import StrictModel

# Quantities both Kubernetes and KFP accept: KFP's checks are stricter than the API server's (no exponents, no
# fractional memory), and the API server rejects KFP's uppercase "K".
CPU_QUANTITY = re.compile(r"^([0-9]*\.)?[0-9]+m?$")
MEMORY_QUANTITY = re.compile(r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")
QUANTITY_SUFFIXES = {
    "m": 1e-3, "": 1, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity_value(quantity: str) -> float:
    """The number a checked CPU or memory quantity stands for (cores, bytes)."""
    number, suffix = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()
    return float(number) * QUANTITY_SUFFIXES[suffix]


class StepResources(StrictModel):
    """What one step's pod asks of the cluster. Unset values keep the step's default (the step catalog's)."""

    model_config = ConfigDict(**StrictModel.model_config, frozen=True)  # the step catalog's defaults are shared

    cpu: str | None = Field(None, description="CPU request: cores, e.g. 2 or 500m")
    memory: str | None = Field(None, description="memory request, e.g. 8Gi or 512Mi")
    cpu_limit: str | None = Field(None, description="CPU limit; the step is throttled above it")
    memory_limit: str | None = Field(None, description="memory limit; a pod above it is killed (OOMKilled)")
    timeout_minutes: int | None = Field(None, gt=0, description="the step fails when it runs longer")

    @field_validator("cpu", "cpu_limit")
    @classmethod
    def _cpu_quantity(cls, value: str | None) -> str | None:
        if value is not None and not CPU_QUANTITY.match(value):
            raise ValueError(f"'{value}' is not a CPU quantity; write cores as a number (2, 0.5) or millicores (500m)")
        return value

    @field_validator("memory", "memory_limit")
    @classmethod
    def _memory_quantity(cls, value: str | None) -> str | None:
        if value is not None and not MEMORY_QUANTITY.match(value):
            raise ValueError(f"'{value}' is not a memory quantity; write a whole number with Ki, Mi, Gi or Ti (512Mi, 8Gi)")
        return value

    @model_validator(mode="after")
    def _request_within_limit(self) -> StepResources:
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            asked, most = getattr(self, request), getattr(self, limit)
            if asked is not None and most is not None and quantity_value(asked) > quantity_value(most):
                raise ValueError(f"{request} {asked} is more than {limit} {most}; Kubernetes refuses such a pod: raise {limit}")
        return self

    def over(self, defaults: StepResources) -> StepResources:
        """These values where set, `defaults` elsewhere (checked again: a raised request may pass the default limit)."""
        return StepResources.model_validate({**defaults.model_dump(exclude_none=True), **self.model_dump(exclude_unset=True)})


class Toleration(StrictModel):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class KubernetesSpec(StrictModel):
    """Where steps run on Kubernetes. Both adapters (KFP, Airflow) and infra/ read these same values."""

    namespace: str = Field("modelpress", description="Kubernetes namespace of the step pods")
    service_account: str = Field("modelpress-runner", description="ServiceAccount the step pods run as")
    image_repository: str | None = Field(None, description="default: MODELPRESS_IMAGE_REPOSITORY or ghcr.io/modelpress")
    image_tag: str | None = Field(
        None, description="tag of every image instead of the version: the derived images `modelpress images --with PKG` builds"
    )
    platform: Literal["kubeflow", "vertex"] = Field(
        "kubeflow", description="where compiled pipelines run: Kubeflow Pipelines on Kubernetes, or Vertex AI Pipelines"
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource a GPU step requests (limit 1)")
    gpu_accelerator: str = Field(
        "NVIDIA_TESLA_T4", description="platform vertex only: Vertex AI's accelerator type for GPU steps (Kubeflow requests gpu_resource)"
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"modelpress.io/pool": "gpu"}, description="node labels GPU steps are scheduled on"
    )
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="taints of the GPU pool that GPU steps tolerate",
    )
    cpu_node_selector: dict[str, str] = Field(default_factory=dict, description="node labels for CPU-only steps")
    secret_name: str = Field("modelpress-s3", description="Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    resources: dict[str, StepResources] = Field(
        default_factory=dict,
        description="per step name: cpu, memory, cpu_limit, memory_limit, timeout_minutes (each step has defaults)",
    )
    gpu_startup_timeout_seconds: int = Field(
        900, gt=0, description="how long a GPU step's pod may take to start: a GPU node scaling up and pulling a CUDA image"
    )
    cpu_startup_timeout_seconds: int = Field(300, gt=0, description="how long a CPU step's pod may take to start")
    training_operator: Literal["trainer", "tfjob"] = Field(
        "trainer",
        description="what runs train.workers > 1: a Kubeflow Trainer v2 TrainJob (infra/trainer) or a Training Operator v1 TFJob",
    )
    tuner: Literal["keras-tuner", "katib"] = Field(
        "keras-tuner",
        description="what runs tune: on the cluster: keras-tuner in the tune pod, or a Katib Experiment with one pod per trial",
    )
    parallel_trials: int = Field(3, ge=1, description="tuner katib: trials running at once (hyperband: at least what its first bracket needs)")
