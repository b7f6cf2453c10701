"""deploy with `serving.kind: kserve`: a published release served by a KServe InferenceService, rolled out as a canary.

1. Refuse an unblessed model and a run without a release (KServe serves what push published); check that the release's
   artifact reproduces the outputs its validation recorded, in its own runtime.
2. Lay the release's servable out the way the runtime reads `storageUri`: `<base>/<model>/kserve/<release>/<release>/`
   (TF Serving and OpenVINO Model Server both load integer version folders under the model path), the model file
   (saved_model.pb, model.xml) written last. The release's number is the version the runtime reports.
3. Write `inferenceservice.yaml`: the TF Serving runtime (KServe v1 protocol) for a SavedModel, the OpenVINO Model
   Server runtime (v2 protocol) for an OpenVINO IR, storageUri on that layout, `canaryTrafficPercent` and tag routing
   so the new revision has its own URL.
4. With `kserve.apply`: create the InferenceService (first release) or patch it (the new revision takes the canary
   share), wait until the new revision is Ready, send the golden rows through the protocol to the new revision and
   compare with the validated outputs, then promote it (100% of traffic) or roll back (0%: the previous revision
   keeps serving; a first release that fails is deleted). Without it: the manifest and layout only, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.names import check_name
from modelpress.common.progress import log
from modelpress.contract.publishing import KServeSpec
from modelpress.io import releases, storage
from modelpress.io.artifacts import ArtifactMeta, check_blessed_content, open_artifact
from modelpress.steps.deploy.config import DeployConfig
from modelpress.steps.deploy.golden import DEPLOYMENT_FILE, compare_outputs, read_validation, served_model

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MANIFEST_FILE = "inferenceservice.yaml"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"  # each revision gets a URL: the canary is tested on its own
LATEST_TAG = "latest"


@dataclass(frozen=True)
class Runtime:
    """A KServe serving runtime and how ModelPress talks to it."""

    model_format: dict[str, str]
    name: str  # the ClusterServingRuntime KServe ships
    protocol: str  # "v1" (TF Serving REST) or "v2" (Open Inference Protocol)
    last_file: str  # the file whose arrival makes the runtime load a version: copied last


# artifact format family -> runtime
RUNTIMES = {
    "saved_model": Runtime({"name": "tensorflow", "version": "2"}, "kserve-tensorflow-serving", "v1", "saved_model.pb"),
    "openvino": Runtime({"name": "openvino"}, "kserve-openvino", "v2", "model.xml"),
}


def runtime_for(format: str) -> Runtime:
    runtime = RUNTIMES.get(format) or RUNTIMES.get(format.split("_")[0])
    if runtime is None:
        raise UserError(f"KServe serves saved_model and openvino_* artifacts, not {format}; deploy one of those formats")
    return runtime


def inference_service(name: str, spec: KServeSpec, runtime: Runtime, storage_uri: str, version: int, canary: bool) -> dict[str, Any]:
    """The InferenceService serving `storage_uri` (release `version`); `canary`: the new revision gets the canary share."""
    predictor: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        "model": {
            "modelFormat": dict(runtime.model_format),
            "runtime": runtime.name,
            "protocolVersion": runtime.protocol,
            "storageUri": storage_uri,
        },
    }
    if canary:
        predictor["canaryTrafficPercent"] = spec.canary_traffic_percent
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/part-of": "modelpress", "modelpress.io/release": str(version)},
            "annotations": {TAG_ROUTING: "true"},
        },
        "spec": {"predictor": predictor},
    }


def servable_folder(folder: Path, meta: ArtifactMeta, scratch: Path) -> Path:
    """A folder holding exactly the model files the runtime loads: the SavedModel directory, or the IR's files."""
    model = folder / meta.model_path
    if model.is_dir():
        return model
    files = scratch / "servable"
    files.mkdir()
    for path in folder.iterdir():
        if path.is_file() and path.name != "artifact.json":
            shutil.copyfile(path, files / path.name)
    return files


def lay_out(servable: Path, uri: str, last: str) -> None:
    """Copy `servable` to `uri`, `last` after everything else, so a runtime never loads a half-copied version."""
    if storage.is_s3(uri):
        storage.remove(uri)  # leftovers of a killed copy (its model file never arrived, so nothing loaded them)
        storage.upload_folder(servable, uri, last=last)
        return
    final = Path(uri)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging")  # not an integer: no runtime loads it
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(servable, staging, ignore=shutil.ignore_patterns(last))
        shutil.copyfile(servable / last, staging / last)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------- the protocols
def http_json(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise StepFailed(f"{method} {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StepFailed(f"{method} {url} failed: {getattr(exc, 'reason', exc)}") from None


def predict_v1(url: str, model: str, rows: np.ndarray) -> np.ndarray:
    """KServe v1 (TF Serving REST): POST /v1/models/<model>:predict {"instances": [...]}."""
    answer = http_json("POST", f"{url}/v1/models/{model}:predict", {"instances": rows.tolist()})
    return np.asarray(answer["predictions"], dtype=np.float32)


def predict_v2(url: str, model: str, rows: np.ndarray) -> np.ndarray:
    """KServe v2 (Open Inference Protocol): the input named by the model's metadata, FP32, row-major data."""
    (input_tensor, *_) = http_json("GET", f"{url}/v2/models/{model}")["inputs"]
    body = {"inputs": [{"name": input_tensor["name"], "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    (output, *_) = http_json("POST", f"{url}/v2/models/{model}/infer", body)["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


PREDICT = {"v1": predict_v1, "v2": predict_v2}


# ----------------------------------------------------------------------------------------- the cluster side
class InferenceServices:
    """InferenceServices of one namespace through the Kubernetes API (in-cluster account, else the kubeconfig)."""

    def __init__(self, namespace: str):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:  # the client reads KUBECONFIG once, when imported: read it now
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        self._api, self._errors, self.namespace = client.CustomObjectsApi(), client.exceptions, namespace

    def get(self, name: str) -> dict | None:
        try:
            return self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except self._errors.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, manifest: dict) -> dict:
        return self._api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)

    def patch(self, name: str, patch: dict) -> dict:
        return self._api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def delete(self, name: str) -> None:
        self._api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)


def new_revision_ready(isvc: dict, previous_revision: str | None) -> bool:
    """Ready, with a predictor revision created after `previous_revision` that is the latest ready one."""
    status = isvc.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    predictor = (status.get("components") or {}).get("predictor") or {}
    latest = predictor.get("latestCreatedRevision")
    return ready and latest is not None and latest != previous_revision and predictor.get("latestReadyRevision") == latest


def revision_url(isvc: dict) -> str:
    """The URL of the newest revision: its `latest` tag (tag routing), else the predictor's or the service's URL."""
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    tagged = [t["url"] for t in predictor.get("traffic") or [] if t.get("tag") == LATEST_TAG and t.get("url")]
    url = (tagged or [predictor.get("url") or status.get("url")])[0]
    if not url:
        raise StepFailed(f"InferenceService {isvc['metadata']['name']} is Ready but reports no URL")
    return url.rstrip("/")


def wait_for_revision(services: InferenceServices, name: str, previous_revision: str | None, timeout_s: float) -> dict:
    started = time.monotonic()
    while True:
        isvc = services.get(name)
        if isvc is not None and new_revision_ready(isvc, previous_revision):
            return isvc
        if time.monotonic() - started > timeout_s:
            conditions = (isvc or {}).get("status", {}).get("conditions") or []
            why = "; ".join(f"{c.get('type')}: {c.get('message') or c.get('reason') or c.get('status')}" for c in conditions)
            raise StepFailed(f"InferenceService {services.namespace}/{name} has no Ready new revision after {timeout_s:.0f}s ({why or 'no status'})")
        time.sleep(1.0)


def roll_out(services: InferenceServices, manifest: dict, runtime: Runtime, spec: KServeSpec, rows: np.ndarray,
             expected: np.ndarray, tolerance: float) -> dict:
    """Apply, wait, send `rows` to the new revision and compare with `expected`, then promote it or roll back."""
    name = manifest["metadata"]["name"]
    existing = services.get(name)
    previous = ((existing or {}).get("status", {}).get("components") or {}).get("predictor", {}).get("latestReadyRevision")
    if existing is None:
        services.create(manifest)
    else:
        services.patch(name, {"metadata": {"labels": manifest["metadata"]["labels"], "annotations": manifest["metadata"]["annotations"]},
                              "spec": manifest["spec"]})  # fmt: skip
    try:
        isvc = wait_for_revision(services, name, previous, spec.ready_timeout_s)
        url = revision_url(isvc)
        worst = compare_outputs(PREDICT[runtime.protocol](url, name, rows), expected, tolerance, f"the outputs of {url}")
    except StepFailed as exc:
        if existing is None:
            services.delete(name)
            raise StepFailed(f"{exc}; the new InferenceService {name} was deleted") from None
        services.patch(name, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
        raise StepFailed(f"{exc}; rolled back: revision {previous} keeps all traffic") from None
    revision = isvc["status"]["components"]["predictor"]["latestReadyRevision"]
    if existing is not None:
        services.patch(name, {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
    log(f"InferenceService {services.namespace}/{name}: revision {revision} answered like the validation (max diff {worst:.2g}); it serves 100%")
    return {"revision": revision, "previous_revision": previous, "url": url, "max_abs_diff": worst, "outcome": "promoted"}


def deploy(config: DeployConfig, model_uri: str, validation_uri: str, release_uri: str | None, output_folder: Path, base: str) -> dict:
    spec = config.serving
    model = spec.model_name
    if model is None:
        raise UserError("serving.model_name is not set; set it (a workflow defaults it to push.model_name or its name)")
    check_name(model, "model name")
    blessing, *golden = read_validation(validation_uri)
    if not blessing.blessed:
        raise UserError(f"refusing to deploy {blessing.name}: it is not blessed ({'; '.join(blessing.reasons)}); fix it and validate again")
    if release_uri is None:
        raise UserError("serving.kind kserve serves a published release: add a push section so deploy reads its release")
    release = json.loads(storage.read_bytes(storage.join(release_uri, "release.json")))
    version = int(release["version"])
    bundle_artifact = storage.join(release["version_uri"], releases.ARTIFACTS_DIR, blessing.name)
    from modelpress.ml.runtimes import load_runner

    with open_artifact(bundle_artifact) as (folder, meta), tempfile.TemporaryDirectory(prefix="modelpress-kserve-") as scratch:
        check_blessed_content(blessing, folder, meta, bundle_artifact)  # the release holds what validate approved
        runtime = runtime_for(meta.format)
        try:
            compare_outputs(load_runner(folder, meta).predict(golden[0]), golden[1], spec.tolerance, f"the outputs of {bundle_artifact}")
        except StepFailed as exc:
            raise UserError(f"{exc}: {validation_uri} validated another model; pass the validation of this model") from None
        storage_uri = storage.join(base, model, "kserve", str(version))
        lay_out(servable_folder(folder, meta, Path(scratch)), storage.join(storage_uri, str(version)), runtime.last_file)
    log(f"{model} release {version} laid out for {runtime.name} at {storage_uri}")
    manifest = inference_service(model, spec.kserve, runtime, storage_uri, version, canary=True)
    (output_folder / MANIFEST_FILE).write_text(yaml.safe_dump(manifest, sort_keys=False))
    result = {"kind": "kserve", "model": model, "version": version, "format": meta.format, "runtime": runtime.name,
              "protocol": runtime.protocol, "storage_uri": storage_uri, "manifest": MANIFEST_FILE, "applied": spec.kserve.apply}  # fmt: skip
    if not spec.kserve.apply:
        log(f"kserve.apply is false: wrote {MANIFEST_FILE} ({spec.kserve.namespace}/{model}); nothing was applied")
        return {**result, "outcome": "written"}
    services = InferenceServices(spec.kserve.namespace)
    existing = services.get(model) is not None
    if not existing:  # a first release takes all traffic: there is nothing to split it with
        manifest["spec"]["predictor"].pop("canaryTrafficPercent")
    return {**result, **roll_out(services, manifest, runtime, spec.kserve, golden[0], golden[1], spec.tolerance)}


def run(config: DeployConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    """The deploy step for serving.kind kserve: inputs validation, model (default: the validation's) and (from push) release."""
    storage.check_output(output, overwrite)
    base = config.serving.base_path or storage.join(releases.run_folder(output), "serving")
    with storage.staged_output(output, overwrite=overwrite, marker=DEPLOYMENT_FILE) as folder:
        result = deploy(config, served_model(inputs), inputs["validation"], inputs.get("release"), folder, base)
        (folder / DEPLOYMENT_FILE).write_text(json.dumps(result, indent=2))
    return {"uri": output, **result}
