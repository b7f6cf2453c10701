"""The kubernetes section: where steps run on a cluster (namespace, images, GPU pool, Secret, training operator, tuner)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelpress.contract.schema import StrictModel


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
    training_operator: Literal["trainer", "tfjob"] = Field(
        "trainer",
        description="what runs train.workers > 1: a Kubeflow Trainer v2 TrainJob (infra/trainer) or a Training Operator v1 TFJob",
    )
    tuner: Literal["keras-tuner", "katib"] = Field(
        "keras-tuner",
        description="what runs tune: on the cluster: keras-tuner in the tune pod, or a Katib Experiment with one pod per trial",
    )
    parallel_trials: int = Field(3, ge=1, description="tuner katib: trials running at once (hyperband: at least what its first bracket needs)")
