"""How a task's pod is placed on Kubernetes, from one function for the Kubeflow task, the Airflow pod and every
TFJob replica: image, GPU limit, node selector and tolerations follow the task's placement and the workflow's
`kubernetes:` section; CPU and memory requests and limits, the timeout and the start-up timeout follow the step's
resources (`catalog.step_resources`). Also the checks a cluster run needs before anything is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelpress.common.errors import UserError
from modelpress.contract.images import Placement
from modelpress.contract.kubernetes import KubernetesSpec, StepResources
from modelpress.contract.schema import CREDENTIAL_FIELDS
from modelpress.contract.workflow import Workflow
from modelpress.io import storage
from modelpress.steps.catalog import step_resources


@dataclass(frozen=True)
class PodPlacement:
    image: str
    gpu_limits: dict[str, str] = field(default_factory=dict)  # {resource name: "1"} for a GPU task
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)  # Kubernetes toleration objects
    # What KFP's set_accelerator_type takes: the Kubernetes resource name on Kubeflow (its driver makes it the limit's
    # name), Vertex AI's accelerator type on Vertex.
    accelerator: str | None = None
    requests: dict[str, str] = field(default_factory=dict)  # {"cpu": ..., "memory": ...}
    limits: dict[str, str] = field(default_factory=dict)  # CPU and memory limits, without the GPU
    timeout_seconds: int | None = None  # the step fails when it runs longer
    startup_timeout_seconds: int = 300  # how long the pod may take to be scheduled and start (node scale-up, image pull)

    @property
    def all_limits(self) -> dict[str, str]:
        """The container's limits: CPU and memory, and the GPU."""
        return {**self.limits, **self.gpu_limits}


def pod_spec(where: PodPlacement, settings: KubernetesSpec, container: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a job's replica or trial: `container` (name, image, command, args) with the S3 keys and the
    placement's resources, on the placement's nodes, as the workflow's service account."""
    # Required: a missing Secret stops the pod at start with "secret not found", not late in the step.
    container = {**container, "envFrom": [{"secretRef": {"name": settings.secret_name, "optional": False}}]}
    resources = {key: value for key, value in (("requests", where.requests), ("limits", where.all_limits)) if value}
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {"serviceAccountName": settings.service_account, "containers": [container]}
    if where.node_selector:
        pod["nodeSelector"] = where.node_selector
    if where.tolerations:
        pod["tolerations"] = where.tolerations
    return pod


def job_waiter_resources(settings: KubernetesSpec) -> StepResources:
    """The pod that creates a training job and waits for it: little CPU and memory, the train step's time."""
    return StepResources(cpu="100m", memory="512Mi", cpu_limit="500m", memory_limit="1Gi", timeout_minutes=step_resources("train", settings).timeout_minutes)


def pod_placement(placement: Placement, settings: KubernetesSpec, resources: StepResources) -> PodPlacement:
    """The pod of a task in `placement` asking for `resources` (`catalog.step_resources(step, settings)`)."""
    sizes = {
        "image": placement.image(settings.image_repository, settings.image_tag),
        "requests": {key: value for key, value in (("cpu", resources.cpu), ("memory", resources.memory)) if value},
        "limits": {key: value for key, value in (("cpu", resources.cpu_limit), ("memory", resources.memory_limit)) if value},
        "timeout_seconds": resources.timeout_minutes * 60 if resources.timeout_minutes else None,
    }
    if not placement.gpu:
        return PodPlacement(**sizes, node_selector=dict(settings.cpu_node_selector), startup_timeout_seconds=settings.cpu_startup_timeout_seconds)
    accelerator = settings.gpu_resource if settings.platform == "kubeflow" else settings.gpu_accelerator
    return PodPlacement(
        **sizes,
        gpu_limits={settings.gpu_resource: "1"},
        node_selector=dict(settings.gpu_node_selector),
        tolerations=[t.model_dump(exclude_none=True) for t in settings.gpu_tolerations],
        accelerator=accelerator,
        startup_timeout_seconds=settings.gpu_startup_timeout_seconds,
    )


def check_credentials(workflow: Workflow) -> None:
    """Credentials in a workflow file would be copied in plain text into the compiled pipeline or the DAG's task
    arguments (and so into UIs and logs): refused, pointing at the Kubernetes Secret the pods read instead."""
    for key in CREDENTIAL_FIELDS:
        if workflow.storage is not None and getattr(workflow.storage, key) is not None:
            raise UserError(
                f"storage.{key}: a credential in the workflow would be copied into the compiled pipeline and the DAG; "
                f"remove it and put AWS_{key.upper()} in the Kubernetes Secret '{workflow.kubernetes.secret_name}' "
                "(kubernetes.secret_name), which every step pod reads",
                ("storage", key),
            )


def check_cluster_workflow(workflow: Workflow) -> None:
    """What would fail only on the cluster, refused when compiling: credentials in the file, a push or serving path
    on the pod's own disk (their defaults, <run>/registry and <run>/serving, sit in the run's object storage: the
    pipeline root or the DAG's run_root), and a builder package the images do not carry."""
    check_credentials(workflow)
    for section, key in (("push", "uri"), ("serving", "base_path")):
        value = getattr(getattr(workflow, section), key, None) if getattr(workflow, section) is not None else None
        if value is not None and not storage.is_s3(value):
            raise UserError(
                f"{section}.{key}: '{value}' is a path on the pod's own disk, lost when the pod ends; "
                f"set an s3:// URI, or leave it unset for the run's own storage",
                (section, key),
            )
    builder = workflow.model.builder
    if builder and not builder.startswith("modelpress.") and workflow.kubernetes.image_tag is None:
        module = builder.partition(":")[0]
        raise UserError(
            f"model.builder: module '{module}' is not in the stock images; build images that carry it "
            "(modelpress images --with PATH_OR_PACKAGE) and set kubernetes.image_tag to the tag it prints",
            ("model", "builder"),
        )
