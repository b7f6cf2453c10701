from typing import Literal

from pydantic import Field

from .._core.spec import ServingSpec, StepConfig, StrictModel


class KServeSpec(StrictModel):
    """A KServe InferenceService per model: TF Serving runtime for a SavedModel, OpenVINO Model Server for an IR."""

    namespace: str = Field("modelpress", description="namespace of the InferenceService")
    service_account: str = Field(
        "modelpress-runner", description="ServiceAccount of the predictor; its S3 credentials let KServe read storageUri"
    )
    canary_traffic_percent: int = Field(10, ge=1, le=99, description="share of requests the new release gets until promoted")
    apply: bool = Field(False, description="apply it on the cluster (in-cluster account or kubeconfig); false: write the manifest only")
    ready_timeout_s: float = Field(600.0, gt=0, description="how long to wait for the new revision to become Ready")


class DeployServing(ServingSpec):
    kind: Literal["tfserving", "kserve"] = Field("tfserving", description="TF Serving base path (default) or a KServe InferenceService")
    kserve: KServeSpec = Field(default_factory=KServeSpec, description="kind kserve: where and how the InferenceService rolls out")


class DeployConfig(StepConfig):
    serving: DeployServing = Field(default_factory=DeployServing)
