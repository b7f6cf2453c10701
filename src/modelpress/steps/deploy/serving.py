"""TensorFlow Serving: the model config it reads, the deployment state we keep next to it, and its APIs.

- `models.config` (text ModelServerConfig, what `--model_config_file` takes) lists every model deployed to the base
  path, each with the versions to keep loaded and its version labels.
- `<base>/_modelpress/<model>.json` remembers the stable version and its history, so rollback knows where to go.
- `ServingClient` speaks the real APIs: gRPC ModelService (HandleReloadConfigRequest, GetModelStatus) and
  PredictionService (GetModelMetadata, Predict), and REST (/v1/models/...) for status and Predict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.names import check_name
from modelpress.common.tf import import_tensorflow
from modelpress.io import storage

CONFIG_FILE = "models.config"
STATE_DIR = "_modelpress"  # cannot be a model name (names start with a letter or digit)
STABLE, CANARY = "stable", "canary"


# -------------------------------------------------------------------------------------------- state and config
def state_uri(base: str, model: str) -> str:
    return storage.join(base, STATE_DIR, f"{check_name(model, 'model name')}.json")


def load_state(base: str, model: str) -> dict[str, Any]:
    uri = state_uri(base, model)
    if storage.exists(uri):
        return json.loads(storage.read_bytes(uri))
    return {"model": model, "stable": None, "history": []}


def update_state(base: str, model: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the model's deployment state by compare-and-swap: a concurrent deploy or rollback is
    re-read and changed again, never overwritten."""

    def apply(current: dict | None) -> dict:
        state = current or {"model": model, "stable": None, "history": []}
        change(state)
        return state

    state, _ = storage.update_json(state_uri(base, model), apply)
    return state


def deployed_models(base: str) -> list[str]:
    folder = storage.join(base, STATE_DIR)
    if storage.is_s3(folder):
        loc = storage.S3Location.parse(folder)
        with storage.s3_errors(folder):
            listing = storage.s3_client().list_objects_v2(Bucket=loc.bucket, Prefix=f"{loc.key}/")
        names = [obj["Key"].rsplit("/", 1)[-1] for obj in listing.get("Contents", [])]
    else:
        from pathlib import Path

        names = [p.name for p in Path(folder).glob("*.json")] if Path(folder).is_dir() else []
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith("."))


def entry_for(state: dict[str, Any]) -> tuple[list[int], dict[str, int]]:
    """Versions kept loaded (the stable one and the one before it, for a quick rollback) and the labels."""
    if state["stable"] is None:
        return [], {}
    earlier = [v for v in state["history"] if v != state["stable"]]
    return sorted({state["stable"], *earlier[-1:]}), {STABLE: state["stable"]}


def server_config(base: str, mount: str | None, entries: dict[str, tuple[list[int], dict[str, int]]]):
    """A ModelServerConfig for every model deployed to `base`; `entries` overrides some models' versions and labels."""
    import_tensorflow()
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    names = sorted(set(deployed_models(base)) | set(entries))
    for name in names:
        versions, labels = entries[name] if name in entries else entry_for(load_state(base, name))
        if not versions:
            continue
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = storage.join(mount or base, name)
        model.model_platform = "tensorflow"
        model.model_version_policy.specific.versions.extend(versions)
        for label, version in sorted(labels.items()):
            model.version_labels[label] = version
    return config


def write_config_file(base: str, config) -> str:
    from google.protobuf import text_format

    uri = storage.join(base, CONFIG_FILE)
    storage.write_bytes(uri, text_format.MessageToString(config).encode())
    return uri


# ---------------------------------------------------------------------------------------------------- client
class ServingClient:
    """One TF Serving instance. Reloads go through gRPC (REST has no reload); status and Predict through REST when
    a REST address is given, else gRPC."""

    def __init__(self, grpc_address: str | None, rest_address: str | None, rpc_timeout_s: float = 30.0):
        if grpc_address is None:
            raise UserError("a TF Serving server needs serving.grpc_address (host:port) to reload its model config")
        self.grpc_address, self.rest_address, self.rpc_timeout_s = grpc_address, rest_address and rest_address.rstrip("/"), rpc_timeout_s
        import_tensorflow()
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(grpc_address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        try:
            self._grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except self._grpc.FutureTimeoutError:
            raise UserError(
                f"TF Serving is unreachable at {self.grpc_address} (no gRPC connection within {timeout_s:.0f}s); "
                "check serving.grpc_address and that the server is running"
            ) from None

    def _call(self, method, request, what: str):
        try:
            return method(request, timeout=self.rpc_timeout_s)
        except self._grpc.RpcError as exc:
            raise self._explain(exc, what) from None

    def _explain(self, exc, what: str) -> UserError:
        code = exc.code()
        if code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED):
            return UserError(f"TF Serving at {self.grpc_address} did not answer {what} ({code.name}); check that it is running")
        return StepFailed(f"TF Serving refused {what}: {code.name}: {exc.details()}")

    def reload(self, config) -> None:
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest(config=config)
        response = self._call(self.models.HandleReloadConfigRequest, request, "the model config reload")
        if response.status.error_code != 0:
            raise StepFailed(f"TF Serving rejected the model config: {response.status.error_message}")

    def version_states(self, model: str) -> dict[int, tuple[str, str]]:
        """version -> (state name, error message) as the server reports them."""
        if self.rest_address:
            response = self._rest("GET", f"/v1/models/{model}")
            if response.status_code == 404:
                return {}
            return {
                int(s["version"]): (s["state"], s.get("status", {}).get("error_message", ""))
                for s in response.json().get("model_version_status", [])
            }
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            response = self.models.GetModelStatus(request, timeout=self.rpc_timeout_s)
        except self._grpc.RpcError as exc:
            if exc.code() == self._grpc.StatusCode.NOT_FOUND:
                return {}
            raise self._explain(exc, "GetModelStatus") from None
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return {s.version: (names(s.state), s.status.error_message) for s in response.model_version_status}

    def wait_available(self, model: str, version: int, timeout_s: float) -> float:
        """Seconds until `version` is AVAILABLE; StepFailed when it ends in error or the timeout passes."""
        started = time.monotonic()
        state, error = "UNKNOWN", ""
        while time.monotonic() - started < timeout_s:
            state, error = self.version_states(model).get(version, ("UNKNOWN", ""))
            if state == "AVAILABLE":
                return time.monotonic() - started
            if state == "END" and error:
                raise StepFailed(f"TF Serving failed to load version {version} of '{model}': {error}")
            time.sleep(0.2)
        raise StepFailed(
            f"version {version} of '{model}' was not AVAILABLE within {timeout_s:g}s (last state {state}"
            f"{': ' + error if error else ''}); raise serving.timeout_s or check the server's logs"
        )

    def predict(self, model: str, inputs: np.ndarray, *, label: str | None = None, version: int | None = None) -> np.ndarray:
        if self.rest_address:
            where = f"/labels/{label}" if label else f"/versions/{version}" if version else ""
            response = self._rest("POST", f"/v1/models/{model}{where}:predict", json={"instances": inputs.tolist()})
            if response.status_code != 200:
                raise StepFailed(f"TF Serving REST Predict on '{model}'{where} failed: {response.status_code} {response.text[:200]}")
            return np.asarray(response.json()["predictions"], dtype=np.float32)
        tf = import_tensorflow()
        from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request = predict_pb2.PredictRequest()
        for spec in (metadata_request.model_spec, request.model_spec):
            spec.name = model
            spec.signature_name = "serving_default"
            if label:
                spec.version_label = label
            elif version:
                spec.version.value = version
        metadata = self._call(self.predictions.GetModelMetadata, metadata_request, "GetModelMetadata")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        (input_name,) = list(signature.inputs)
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(inputs.astype(np.float32)))
        response = self._call(self.predictions.Predict, request, "Predict")
        output_name = sorted(response.outputs)[0]
        return tf.make_ndarray(response.outputs[output_name])

    def _rest(self, method: str, path: str, **kwargs):
        import requests

        try:
            return requests.request(method, f"{self.rest_address}{path}", timeout=self.rpc_timeout_s, **kwargs)
        except requests.ConnectionError:
            raise UserError(f"TF Serving's REST API is unreachable at {self.rest_address}; check serving.rest_address") from None
