"""A KServe test server: the part of the Kubernetes API deploy uses for InferenceServices, and a predictor per revision
speaking the KServe v1 (TF Serving REST) or v2 (Open Inference Protocol) protocol, computing with the real runtime.

It exists because no Kubernetes API server or KServe runs on the test machines. It follows KServe where deploy depends
on it:
- `/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices[/<name>]`: POST creates, GET reads, PATCH
  (JSON merge patch, what the kubernetes client sends for a dict) updates, DELETE removes; 404 for an unknown name.
- A create, or a patch that changes the predictor's model, rolls out a new revision `<name>-predictor-0000N`: like
  the storage initializer plus the runtime it loads the highest integer version folder under `storageUri` (a local
  path here) — a SavedModel's serving signature in TensorFlow for protocol v1, an OpenVINO IR for v2 — and reports
  the revision Ready. A load that fails leaves the InferenceService not Ready with the error as the message.
- `canaryTrafficPercent` splits traffic between the newest revision (tag `latest`) and the previous rolled-out one
  (tag `prev`); absent or 100 gives the newest all of it, 0 gives it none. Each revision has its own URL.
`wrong_versions` makes revisions loaded from those version folders answer off by 0.5 (to test deploy's rollback).
Test code only: never imported by the product.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from pathlib import Path

import numpy as np

from tests.json_http import JsonHandler, LoopbackServer

API = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/?]+))?")
PREDICTOR = re.compile(r"^/predictors/(?P<revision>[^/]+)/(?P<protocol>v1|v2)/models/(?P<model>[^/:]+)(?P<rest>.*)$")


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Revision:
    """One predictor revision: the runtime the model's protocol implies, on the newest version under storageUri."""

    def __init__(self, name: str, model: dict, wrong_versions: set[int]):
        self.name, self.protocol = name, model.get("protocolVersion", "v1")
        base = Path(model["storageUri"])
        versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
        if not versions:
            raise FileNotFoundError(f"no integer version folder under {base}")
        self.version = versions[-1]
        self.offset = 0.5 if self.version in wrong_versions else 0.0
        folder = base / str(self.version)
        if self.protocol == "v1":
            import tensorflow as tf

            loaded = tf.saved_model.load(str(folder))
            self._keep, function = loaded, loaded.signatures["serving_default"]
            (input_name,) = function.structured_input_signature[1]
            self.input_name = input_name
            self._run = lambda rows: next(iter(function(**{input_name: tf.constant(rows)}).values())).numpy()
        else:
            import openvino as ov

            compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            self.input_name = compiled.input(0).any_name
            self._run = lambda rows: np.array(compiled.create_infer_request().infer({0: rows})[compiled.output(0)])

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self._run(rows.astype(np.float32)) + self.offset


class KServeTestServer(LoopbackServer):
    def __init__(self, wrong_versions: tuple[int, ...] = ()):
        self.wrong_versions = set(wrong_versions)
        self.services: dict[tuple[str, str], dict] = {}
        self.revisions: dict[str, Revision] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every predictor call
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        server = self

        class Handler(JsonHandler):
            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _handle(self, method: str) -> None:
                body = self._body() if method in ("POST", "PATCH") else None
                code, answer = server.handle(method, self.path, body)
                self.answer(code, answer)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_DELETE(self):
                self._handle("DELETE")

        return self.serve(Handler)

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return path

    def traffic(self, namespace: str, name: str) -> dict[str, int]:
        predictor = self.services[(namespace, name)]["status"]["components"]["predictor"]
        return {t["revisionName"]: t["percent"] for t in predictor["traffic"] if t["percent"]}

    # ------------------------------------------------------------------------------------------ the API
    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        with self._lock:
            api = API.match(path)
            if api:
                return self._api(method, api["ns"], api["name"], body)
            predictor = PREDICTOR.match(path)
            if predictor:
                self.requests.append((method, path))
                return self._predict(method, predictor, body)
            return 404, {"error": f"no route for {path}"}

    def _api(self, method: str, namespace: str, name: str | None, body: dict | None) -> tuple[int, dict]:
        if method == "POST":
            name = body["metadata"]["name"]
            if (namespace, name) in self.services:
                return 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409}
            isvc = {**copy.deepcopy(body), "status": {}}
            isvc["metadata"]["namespace"] = namespace
            self.services[(namespace, name)] = isvc
            self._roll_out(isvc)
            return 201, isvc
        isvc = self.services.get((namespace, name))
        if isvc is None:
            return 404, {"kind": "Status", "reason": "NotFound", "code": 404, "message": f"inferenceservices {name} not found"}
        if method == "GET":
            return 200, isvc
        if method == "DELETE":
            del self.services[(namespace, name)]
            return 200, {"kind": "Status", "status": "Success"}
        model_before = copy.deepcopy(isvc["spec"]["predictor"].get("model"))
        updated = merge_patch(isvc, {k: v for k, v in body.items() if k != "status"})
        isvc.clear()
        isvc.update(updated)
        if isvc["spec"]["predictor"].get("model") != model_before:
            self._roll_out(isvc)
        else:
            self._route(isvc)
        return 200, isvc

    def _roll_out(self, isvc: dict) -> None:
        name = isvc["metadata"]["name"]
        predictor = isvc["status"].setdefault("components", {}).setdefault("predictor", {})
        number = int(predictor.get("latestCreatedRevision", "-0").rsplit("-", 1)[-1]) + 1
        revision = f"{name}-predictor-{number:05d}"
        predictor["latestCreatedRevision"] = revision
        try:
            self.revisions[revision] = Revision(revision, isvc["spec"]["predictor"]["model"], self.wrong_versions)
        except Exception as exc:  # the runtime could not load: the revision never becomes ready
            isvc["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": str(exc)}]
            return
        if predictor.get("latestReadyRevision"):
            predictor["previousRolledoutRevision"] = predictor.get("latestRolledoutRevision", predictor["latestReadyRevision"])
        predictor["latestReadyRevision"] = revision
        isvc["status"]["conditions"] = [{"type": "Ready", "status": "True"}, {"type": "PredictorReady", "status": "True"}]
        self._route(isvc)

    def _route(self, isvc: dict) -> None:
        predictor = isvc["status"]["components"]["predictor"]
        latest, previous = predictor["latestReadyRevision"], predictor.get("previousRolledoutRevision")
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        share = 100 if canary is None or previous is None else int(canary)
        if share == 100:
            predictor["latestRolledoutRevision"] = latest
        traffic = [{"tag": "latest", "revisionName": latest, "percent": share, "latestRevision": True, "url": self._revision_url(latest)}]
        if previous is not None and share < 100:
            traffic.append({"tag": "prev", "revisionName": previous, "percent": 100 - share, "url": self._revision_url(previous)})
        predictor["traffic"] = traffic
        predictor["url"] = isvc["status"]["url"] = self._revision_url(traffic[0]["revisionName"] if share else previous)

    def _revision_url(self, revision: str) -> str:
        return f"{self.url}/predictors/{revision}"

    # ------------------------------------------------------------------------------------ the protocols
    def _predict(self, method: str, match: re.Match, body: dict | None) -> tuple[int, dict]:
        revision = self.revisions.get(match["revision"])
        if revision is None or revision.protocol != match["protocol"]:
            return 404, {"error": f"no {match['protocol']} predictor {match['revision']}"}
        rest = match["rest"]
        if match["protocol"] == "v1":
            if method == "GET" and rest == "":
                return 200, {"model_version_status": [{"version": str(revision.version), "state": "AVAILABLE"}]}
            if method == "POST" and rest == ":predict":
                return 200, {"predictions": revision.predict(np.asarray(body["instances"], np.float32)).tolist()}
        else:
            if method == "GET" and rest == "":
                return 200, {"name": match["model"], "versions": [str(revision.version)], "platform": "OpenVINO",
                             "inputs": [{"name": revision.input_name, "datatype": "FP32", "shape": [-1]}], "outputs": []}  # fmt: skip
            if method == "GET" and rest == "/ready":
                return 200, {"name": match["model"], "ready": True}
            if method == "POST" and rest == "/infer":
                (tensor,) = body["inputs"]
                if tensor["name"] != revision.input_name or tensor["datatype"] != "FP32":
                    return 400, {"error": f"expected FP32 input {revision.input_name}"}
                result = revision.predict(np.asarray(tensor["data"], np.float32).reshape(tensor["shape"]))
                return 200, {"model_name": match["model"], "outputs": [
                    {"name": "output", "shape": list(result.shape), "datatype": "FP32", "data": result.ravel().tolist()}]}  # fmt: skip
        return 404, {"error": f"no {method} {rest!r} in protocol {match['protocol']}"}
