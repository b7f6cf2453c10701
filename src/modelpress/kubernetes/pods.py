"""How a task's pod is placed on Kubernetes, from one function for the Kubeflow task, the Airflow pod and every
TFJob replica: image, GPU limit, node selector and tolerations follow the task's placement and the workflow's
`kubernetes:` section. Also the checks a cluster run needs before anything is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelpress.common.errors import UserError
from modelpress.contract.images import Placement
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.contract.schema import CREDENTIAL_FIELDS
from modelpress.contract.workflow import Workflow
from modelpress.io import storage


@dataclass(frozen=True)
class PodPlacement:
    image: str
    gpu_limits: dict[str, str] = field(default_factory=dict)  # {resource name: "1"} for a GPU task
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)  # Kubernetes toleration objects
    # What KFP's set_accelerator_type takes: the Kubernetes resource name on Kubeflow (its driver makes it the limit's
    # name), Vertex AI's accelerator type on Vertex.
    accelerator: str | None = None


def pod_placement(placement: Placement, settings: KubernetesSpec) -> PodPlacement:
    image = placement.image(settings.image_repository, settings.image_tag)
    if not placement.gpu:
        return PodPlacement(image, node_selector=dict(settings.cpu_node_selector))
    accelerator = settings.gpu_resource if settings.platform == "kubeflow" else settings.gpu_accelerator
    return PodPlacement(
        image,
        gpu_limits={settings.gpu_resource: "1"},
        node_selector=dict(settings.gpu_node_selector),
        tolerations=[t.model_dump(exclude_none=True) for t in settings.gpu_tolerations],
        accelerator=accelerator,
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
