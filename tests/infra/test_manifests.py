"""infra/: every rendered manifest is valid Kubernetes 1.37, locked down, consistent with KubernetesSpec and holds no secret.

The overlays are rendered by tests/infra/kustomize_subset.py (no kustomize binary needed); every real kustomize the
machine has (`kustomize build`, `kubectl kustomize`) renders them too, and each must agree document for document.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from modelpress.contract.images import DEPENDENCY_SETS, image_for
from modelpress.contract.kubernetes import KubernetesSpec
from tests.conftest import ROOT
from tests.infra.kustomize_subset import all_containers, identity, pod_specs, render, split_image

INFRA = ROOT / "infra"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.37"
CLUSTER = KubernetesSpec()
# Secrets the manifests read and that the deployment guide tells the operator to create.
EXPECTED_SECRETS = {CLUSTER.secret_name, "modelpress-minio-root"}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(INFRA / "overlays" / request.param)


def by_kind(documents: list[dict], kind: str) -> list[dict]:
    return [d for d in documents if d["kind"] == kind]


def one(documents: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_every_manifest_validates_against_the_kubernetes_schema(overlay):
    name, documents = overlay
    assert len(documents) >= 20
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {identity(document)}: {exc.message} at {list(exc.path)}")


KUSTOMIZE_COMMANDS = [command for command in (["kustomize", "build"], ["kubectl", "kustomize"]) if shutil.which(command[0])]


@pytest.mark.skipif(not KUSTOMIZE_COMMANDS, reason="neither kustomize nor kubectl (which embeds it) is installed")
def test_the_subset_renderer_agrees_with_kustomize(overlay):
    name, documents = overlay
    for command in KUSTOMIZE_COMMANDS:
        rendered = subprocess.run([*command, str(INFRA / "overlays" / name)], capture_output=True, text=True, check=True)
        expected = {identity(d): d for d in yaml.safe_load_all(rendered.stdout) if d}
        assert {identity(d): d for d in documents} == expected, f"{' '.join(command)} renders {name} differently"


def test_the_renderer_refuses_kustomize_features_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamespace: elsewhere\n")
    with pytest.raises(ValueError, match="namespace"):
        render(tmp_path)


def test_containers_run_as_non_root_on_a_read_only_root_filesystem_with_limits(overlay):
    name, documents = overlay
    specs = pod_specs(documents)
    assert {"modelpress-tfserving", "modelpress-minio", "modelpress-minio-bucket"} <= {
        d["metadata"]["name"] for d in documents if d["kind"] in ("Deployment", "Job")
    }
    for spec in specs:
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            where = f"{name}: container {container['name']}"
            context = container.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert context.get("runAsNonRoot", spec.get("securityContext", {}).get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", spec.get("securityContext", {}).get("runAsUser", 0)) != 0, where
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= limits.keys(), where


def test_namespace_and_defaults_for_step_pods_match_cluster_spec(overlay):
    _, documents = overlay
    namespaced = [d for d in documents if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {CLUSTER.namespace}
    assert one(documents, "Namespace", CLUSTER.namespace)
    # Containers without limits of their own (KFP and Airflow helpers) get the LimitRange's.
    (limit_range,) = by_kind(documents, "LimitRange")
    defaults = limit_range["spec"]["limits"][0]
    assert {"cpu", "memory"} <= defaults["default"].keys() and {"cpu", "memory"} <= defaults["defaultRequest"].keys()


def gpu_pods(documents: list[dict]) -> list[tuple[dict, dict]]:
    """(pod spec, container) for every container that asks for any GPU-like extended resource."""
    return [
        (spec, container)
        for spec in pod_specs(documents)
        for container in [*spec.get("initContainers", []), *spec["containers"]]
        if any(key.endswith("/gpu") for key in container.get("resources", {}).get("limits", {}))
    ]


def test_gpu_workloads_use_the_cluster_spec_gpu_pool(overlay):
    name, documents = overlay
    found = gpu_pods(documents)
    if name == "dev":
        assert found == []  # the dev overlay runs on CPU only
        return
    assert [c["name"] for _, c in found] == ["tfserving"]
    tolerations = [t.model_dump(exclude_none=True) for t in CLUSTER.gpu_tolerations]
    for spec, container in found:
        assert container["resources"]["limits"] == {**container["resources"]["limits"], CLUSTER.gpu_resource: "1"}
        assert [k for k in container["resources"]["limits"] if k.endswith("/gpu")] == [CLUSTER.gpu_resource]
        assert spec["nodeSelector"] == CLUSTER.gpu_node_selector
        assert all(t in spec["tolerations"] for t in tolerations)
        assert container["image"].endswith("-gpu")
    (quota,) = by_kind(documents, "ResourceQuota")
    assert list(quota["spec"]["hard"]) == [f"requests.{CLUSTER.gpu_resource}"]


def test_modelpress_images_are_the_registry_images_at_the_package_version(overlay):
    _, documents = overlay
    ours = [c["image"] for c in all_containers(documents) if "/modelpress-" in c["image"]]
    assert ours and set(ours) <= {image_for(s) for s in DEPENDENCY_SETS}
    for container in all_containers(documents):
        _, tag, digest = split_image(container["image"])
        assert digest or (tag and tag != "latest" and re.search(r"\d", tag)), f"{container['image']} is not pinned"


def test_tf_serving_serves_grpc_and_rest_from_the_synced_config(overlay):
    _, documents = overlay
    deployment = one(documents, "Deployment", "modelpress-tfserving")
    spec = deployment["spec"]["template"]["spec"]
    serving = next(c for c in spec["containers"] if c["name"] == "tfserving")
    arguments = dict(a.removeprefix("--").split("=", 1) for a in serving["args"])
    assert (arguments["port"], arguments["rest_api_port"]) == ("8500", "8501")
    assert {p["name"]: p["containerPort"] for p in serving["ports"]} == {"grpc": 8500, "rest": 8501}
    # TF Serving reads the config from the synced volume; the sidecar seeds it from the ConfigMap.
    models_mount = next(m["mountPath"] for m in serving["volumeMounts"] if m["name"] == "models")
    assert arguments["model_config_file"].startswith(models_mount + "/")
    sync = next(c for c in spec["initContainers"] if c["name"] == "sync")
    assert sync["restartPolicy"] == "Always" and sync["image"] == image_for("base")
    bootstrap_map = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "bootstrap")
    bootstrap = one(documents, "ConfigMap", bootstrap_map)["data"]["models.config"]
    parsed = text_format.Parse(bootstrap, model_server_config_pb2.ModelServerConfig())
    assert parsed.WhichOneof("config") == "model_config_list"
    script = one(documents, "ConfigMap", next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "sync-script"))
    assert script["data"]["sync_models.py"] == (INFRA / "base" / "tfserving" / "sync_models.py").read_text()
    # Ready only when the model's stable label resolves (TF Serving's model status over REST).
    probe = serving["readinessProbe"]["httpGet"]
    assert re.fullmatch(r"/v1/models/[a-z0-9][a-z0-9_-]*/labels/stable", probe["path"]) and probe["port"] == "rest"
    for service_name in ("modelpress-tfserving", "modelpress-tfserving-admin"):
        service = one(documents, "Service", service_name)
        assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {(8500, "grpc"), (8501, "rest")}
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert one(documents, "Service", "modelpress-tfserving-admin")["spec"]["publishNotReadyAddresses"] is True


def test_rbac_is_namespaced_and_grants_only_what_the_launchers_use(overlay):
    _, documents = overlay
    assert not by_kind(documents, "ClusterRole") and not by_kind(documents, "ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r for r in by_kind(documents, "Role")}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            if {"secrets", "configmaps"} & set(rule["resources"]):  # named objects only, read only
                assert rule["resourceNames"] and rule["verbs"] == ["get"], rule

    def allowed(role: str, group: str, resource: str, verb: str, name: str | None = None) -> bool:
        return any(
            group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
            and (name is None or name in r.get("resourceNames", [name]))
            for r in roles[role]["rules"]
        )

    # What KFP's v2 launcher reads with the step pod's account before the step runs (KFP backend 2.16 sources:
    # v2/config/env.go, v2/objectstore/object_store.go, v2/component/launcher_v2.go); without them: Forbidden.
    assert allowed("modelpress-runner", "", "configmaps", "get", "kfp-launcher")
    assert allowed("modelpress-runner", "", "secrets", "get", "mlpipeline-minio-artifact")
    assert allowed("modelpress-runner", "", "pods", "get")
    assert not allowed("modelpress-runner", "", "secrets", "list") and not allowed("modelpress-runner", "", "secrets", "get", "other")
    assert allowed("modelpress-runner", "kubeflow.org", "tfjobs", "create")
    for role in ("modelpress-runner", "modelpress-airflow-launcher"):  # who starts multi-worker training
        assert allowed(role, "trainer.kubeflow.org", "trainjobs", "create") and allowed(role, "trainer.kubeflow.org", "trainjobs", "delete")
    assert allowed("modelpress-runner", "serving.kserve.io", "inferenceservices", "patch")  # deploy, serving.kind kserve
    assert not allowed("modelpress-runner", "", "pods", "create")
    for verb in ("create", "delete", "watch"):
        assert allowed("modelpress-airflow-launcher", "", "pods", verb)
    assert allowed("modelpress-airflow-launcher", "", "pods/exec", "create")  # the xcom sidecar's result
    bindings = {b["roleRef"]["name"]: b["subjects"] for b in by_kind(documents, "RoleBinding")}
    assert bindings["modelpress-runner"] == [
        {"kind": "ServiceAccount", "name": CLUSTER.service_account, "namespace": CLUSTER.namespace}
    ]
    accounts = {a["metadata"]["name"]: a for a in by_kind(documents, "ServiceAccount")}
    assert CLUSTER.service_account in accounts
    for spec in pod_specs(documents):  # serving and storage pods get no API token
        assert accounts[spec["serviceAccountName"]].get("automountServiceAccountToken") is False


def test_network_policies_deny_by_default_and_open_every_service_port(overlay):
    _, documents = overlay
    policies = by_kind(documents, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    workloads = [d for d in documents if d["kind"] == "Deployment"]
    for service in by_kind(documents, "Service"):
        pods = next(w for w in workloads if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items())
        labels = pods["spec"]["template"]["metadata"]["labels"]
        container_ports = {p["name"]: p["containerPort"] for c in pods["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        opened = {
            port["port"]
            for policy in policies
            if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items() and policy["spec"]["podSelector"]
            for rule in policy["spec"].get("ingress", [])
            for port in rule.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert container_ports[port["targetPort"]] in opened, f"{service['metadata']['name']} port {port['port']} is blocked"


SECRET_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"(?i)(aws_secret_access_key|secret_key|password)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}"),
)


def test_no_secret_value_is_committed(overlay):
    _, documents = overlay
    for secret in by_kind(documents, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), f"{secret['metadata']['name']} holds values"
    for container in all_containers(documents):
        for variable in container.get("env", []):
            if re.search(r"KEY|PASSWORD|SECRET|TOKEN|USER", variable["name"]) and not variable["name"].startswith("MC_HOST"):
                assert "value" not in variable and "secretKeyRef" in variable["valueFrom"], variable["name"]
    referenced = {e["valueFrom"]["secretKeyRef"]["name"] for c in all_containers(documents) for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    referenced |= {e["secretRef"]["name"] for c in all_containers(documents) for e in c.get("envFrom", []) if "secretRef" in e}
    assert referenced == EXPECTED_SECRETS
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for name in referenced:  # the guide tells the operator how to create each one
        assert f"kubectl -n {CLUSTER.namespace} create secret generic {name}" in guide


def test_no_aws_key_pattern_in_the_deployment_files():
    files = [p for folder in ("infra", "containers") for p in (ROOT / folder).rglob("*") if p.is_file()]
    files.append(ROOT / "docs" / "deployment.md")
    for path in files:
        text = path.read_text(errors="replace")
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"{path.relative_to(ROOT)} looks like it holds a credential"
    assert SECRET_PATTERNS[0].search("key AKIAABCDEFGHIJKLMNOP here")  # the patterns do catch a key


def test_every_yaml_in_infra_is_part_of_an_overlay():
    """A manifest no kustomization reaches would be neither validated here nor applied by the guide."""
    used: set[Path] = set()

    def collect(folder: Path) -> None:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used.add(folder / "kustomization.yaml")
        for entry in kustomization.get("resources", []):
            collect(folder / entry) if (folder / entry).is_dir() else used.add(folder / entry)
        used.update(folder / p["path"] for p in kustomization.get("patches", []))
        used.update(folder / f for g in kustomization.get("configMapGenerator", []) for f in g["files"])

    for name in OVERLAYS:
        collect(INFRA / "overlays" / name)
    collect(INFRA / "trainer")  # cluster-wide, applied once per cluster (kubectl apply -k infra/trainer)
    files = {p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {p.resolve() for p in files} == {p.resolve() for p in used}
