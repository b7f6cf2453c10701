"""A TensorFlow Serving test server: the real gRPC services and REST endpoints, backed by TensorFlow in-process.

It exists because no TF Serving binary runs on the test machines. It speaks the tensorflow-serving-api messages
over real gRPC (ModelService: HandleReloadConfigRequest, GetModelStatus; PredictionService: GetModelMetadata,
Predict) and TF Serving's REST API (/v1/models/<name>[/versions/<v>|/labels/<l>][:predict|/metadata]), and follows
TF Serving's rules where deploy depends on them:
- versions are the integer folders under <base_path> that hold saved_model.pb, chosen by the model version policy
  (latest N by default, all, or specific), loaded in the background (LOADING -> AVAILABLE, or END with an error)
  and re-scanned every `poll_s` like TF Serving's file system poll;
- the first config waits for its versions before applying labels; a later reload that labels a version which is
  not AVAILABLE fails with FAILED_PRECONDITION and keeps the previous labels;
- requests name a version, a version label, or nothing (the newest AVAILABLE version).
`load_delay_s` slows every load down (to test deploy's timeout). Test code only: never imported by the product.

    python -m tests.serving_test_server --grpc-port 8500 --rest-port 8501 [--model-config-file models.config]
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np

from modelpress.common.tf import import_tf
from tests.json_http import JsonHandler

tf, _ = import_tf()
from google.protobuf import json_format, text_format  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

State = get_model_status_pb2.ModelVersionStatus.State


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Version:
    state: int = State.START
    error: str = ""
    function: object = None  # the serving signature, once loaded
    signatures: dict = field(default_factory=dict)  # SignatureDef protos from saved_model.pb
    keep: object = None


@dataclass
class Model:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


class ServingTestServer:
    def __init__(self, load_delay_s: float = 0.0, poll_s: float = 0.5):
        self.load_delay_s, self.poll_s = load_delay_s, poll_s
        self.models: dict[str, Model] = {}
        self.lock = threading.RLock()
        self.configured = False
        self.reloads: list[model_server_config_pb2.ModelServerConfig] = []  # every config received, for tests
        self.rest_requests: list[str] = []  # "GET /v1/models/x" for every REST call, for tests
        self._stop = threading.Event()

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self, grpc_port: int = 0, rest_port: int = 0) -> tuple[str, str]:
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self), self.grpc_server)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self), self.grpc_server)
        grpc_port = self.grpc_server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        self.grpc_server.start()
        self.rest_server = ThreadingHTTPServer(("127.0.0.1", rest_port), rest_handler(self))
        threading.Thread(target=self.rest_server.serve_forever, daemon=True).start()
        threading.Thread(target=self._poll, daemon=True).start()
        return f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{self.rest_server.server_address[1]}"

    def stop(self) -> None:
        self._stop.set()
        self.grpc_server.stop(0)
        self.rest_server.shutdown()
        self.rest_server.server_close()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self.lock:
                for model in self.models.values():
                    self._sync(model)

    # ---------------------------------------------------------------------------------------------- config
    def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        self.reloads.append(config)
        first = not self.configured
        with self.lock:
            wanted = {c.name: c for c in config.model_config_list.config}
            for name in list(self.models):
                if name not in wanted:
                    for version in self.models.pop(name).versions.values():
                        version.state, version.function, version.keep = State.END, None, None
            for name, model_config in wanted.items():
                if model_config.base_path.startswith("s3://"):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "this test server reads local base paths only")
                model = self.models.setdefault(name, Model(model_config))
                model.config = model_config
                self._sync(model)
            self.configured = True
        if first:  # TF Serving waits for the first config's models before it labels them
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                v.state in (State.START, State.LOADING) for m in self.models.values() for v in m.versions.values()
            ):
                time.sleep(0.05)
        with self.lock:
            for name, model_config in wanted.items():
                model = self.models[name]
                labels = dict(model_config.version_labels)
                for number in labels.values():
                    version = model.versions.get(number)
                    if version is None or version.state != State.AVAILABLE:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"Request to assign label to version {number} of model {name}, which is not currently "
                            "available for inference",
                        )
                model.labels = labels

    def _sync(self, model: Model) -> None:
        """Load the versions the policy wants from what is on disk; unload the others."""
        base = Path(model.config.base_path)
        on_disk = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()) if base.is_dir() else []
        policy = model.config.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "specific":
            wanted = [v for v in on_disk if v in set(policy.specific.versions)]
        elif choice == "all":
            wanted = on_disk
        else:
            wanted = on_disk[-(policy.latest.num_versions or 1) :]
        for number in list(model.versions):
            if number not in wanted:
                model.versions.pop(number).state = State.END
        for number in wanted:
            if number not in model.versions:
                model.versions[number] = Version()
                threading.Thread(target=self._load, args=(model, number, base / str(number)), daemon=True).start()

    def _load(self, model: Model, number: int, path: Path) -> None:
        version = model.versions[number]
        version.state = State.LOADING
        time.sleep(self.load_delay_s)
        try:
            meta = saved_model_pb2.SavedModel()
            meta.ParseFromString((path / "saved_model.pb").read_bytes())
            loaded = tf.saved_model.load(str(path))
            version.signatures = dict(meta.meta_graphs[0].signature_def)
            version.keep, version.function = loaded, loaded.signatures["serving_default"]
            version.state = State.AVAILABLE
        except Exception as exc:  # noqa: BLE001 - TF Serving reports any load failure in the version's status
            version.error, version.state = f"Failed to load servable version {number}: {exc}".splitlines()[0], State.END

    # ---------------------------------------------------------------------------------------------- lookup
    def resolve(self, name: str, version: int | None, label: str | None) -> tuple[int, Version]:
        with self.lock:
            model = self.models.get(name)
            if model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
            if label:
                if label not in model.labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            if version:
                slot = model.versions.get(version)
                if slot is None or slot.state != State.AVAILABLE:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
                return version, slot
            available = [v for v, s in model.versions.items() if s.state == State.AVAILABLE]
            if not available:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
            return max(available), model.versions[max(available)]

    def statuses(self, name: str, version: int | None = None, label: str | None = None) -> list[tuple[int, Version]]:
        with self.lock:
            model = self.models.get(name)
            if model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            if label:
                if label not in model.labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            items = sorted(model.versions.items())
            if version:
                items = [(v, s) for v, s in items if v == version]
                if not items:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return items

    @staticmethod
    def run(slot: Version, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in slot.function(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


# ---------------------------------------------------------------------------------------------- gRPC services
def _spec_version(spec) -> tuple[int | None, str | None]:
    return (spec.version.value if spec.HasField("version") else None), (spec.version_label or None)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ServingTestServer):
        self.server = server

    def HandleReloadConfigRequest(self, request, context):
        if request.config.WhichOneof("config") != "model_config_list":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ServerModelConfig type not supported by "
                          "HandleReloadConfigRequest. Only ModelConfigList is currently supported")
        try:
            self.server.reload(request.config)
        except ServingError as exc:  # TF Serving returns the reload's error as the call's status
            context.abort(exc.code, str(exc))
        return model_management_pb2.ReloadConfigResponse()

    def GetModelStatus(self, request, context):
        try:
            items = self.server.statuses(request.model_spec.name, *_spec_version(request.model_spec))
        except ServingError as exc:
            context.abort(exc.code, str(exc))
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, slot in items:
            status = response.model_version_status.add(version=number, state=slot.state)
            status.status.error_code = 0 if not slot.error else 13
            status.status.error_message = slot.error
        return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ServingTestServer):
        self.server = server

    def GetModelMetadata(self, request, context):
        try:
            number, slot = self.server.resolve(request.model_spec.name, *_spec_version(request.model_spec))
        except ServingError as exc:
            context.abort(exc.code, str(exc))
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is the only one supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = number
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in slot.signatures.items():
            signatures.signature_def[key].CopyFrom(value)
        response.metadata["signature_def"].Pack(signatures)
        return response

    def Predict(self, request, context):
        try:
            number, slot = self.server.resolve(request.model_spec.name, *_spec_version(request.model_spec))
        except ServingError as exc:
            context.abort(exc.code, str(exc))
        signature = request.model_spec.signature_name or "serving_default"
        if signature != "serving_default":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature key \"{signature}\" not found.")
        expected = set(slot.signatures["serving_default"].inputs)
        if set(request.inputs) != expected:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input keys {sorted(request.inputs)} do not match the signature's {sorted(expected)}")
        outputs = self.server.run(slot, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = number
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            if not request.output_filter or key in request.output_filter:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


# ------------------------------------------------------------------------------------------------------- REST
REST_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?P<verb>:predict|/metadata)?$")
HTTP_STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400}


def rest_handler(server: ServingTestServer):
    class Handler(JsonHandler):

        def _route(self, method: str):
            server.rest_requests.append(f"{method} {self.path}")
            match = REST_PATH.match(self.path)
            if match is None:
                return self.answer(404, {"error": f"Malformed request: {method} {self.path}"})
            name, verb, label = match["name"], match["verb"], match["label"]
            version = int(match["version"]) if match["version"] else None
            try:
                if method == "GET" and verb is None:
                    return self.answer(200, {"model_version_status": [
                        {"version": str(n), "state": State.Name(s.state), "status": {"error_code": "OK" if not s.error else "UNKNOWN", "error_message": s.error}}
                        for n, s in server.statuses(name, version, label)
                    ]})
                number, slot = server.resolve(name, version, label)
                if method == "GET" and verb == "/metadata":
                    signatures = {k: json_format.MessageToDict(v, preserving_proto_field_name=True) for k, v in slot.signatures.items()}
                    return self.answer(200, {"model_spec": {"name": name, "version": str(number)}, "metadata": {"signature_def": {"signature_def": signatures}}})
                if method == "POST" and verb == ":predict":
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    (input_name,) = list(slot.signatures["serving_default"].inputs)
                    if "instances" in body:
                        outputs = server.run(slot, {input_name: np.asarray(body["instances"], dtype=np.float32)})
                        (values,) = outputs.values() if len(outputs) == 1 else (None,)
                        return self.answer(200, {"predictions": values.tolist() if values is not None else
                                                [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(body["instances"]))]})
                    if "inputs" in body:
                        outputs = server.run(slot, {input_name: np.asarray(body["inputs"], dtype=np.float32)})
                        return self.answer(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})
                    return self.answer(400, {"error": "JSON Value: {} Missing 'instances' or 'inputs' key"})
                return self.answer(404, {"error": f"Malformed request: {method} {self.path}"})
            except ServingError as exc:
                return self.answer(HTTP_STATUS.get(exc.code, 500), {"error": str(exc)})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-port", type=int, default=8500)
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--model-config-file", help="a models.config (text ModelServerConfig), like TF Serving's flag")
    parser.add_argument("--load-delay-s", type=float, default=0.0)
    args = parser.parse_args()
    server = ServingTestServer(load_delay_s=args.load_delay_s)
    grpc_address, rest_address = server.start(args.grpc_port, args.rest_port)
    if args.model_config_file:
        server.reload(text_format.Parse(Path(args.model_config_file).read_text(), model_server_config_pb2.ModelServerConfig()))
    print(f"serving test server: gRPC {grpc_address}, REST {rest_address}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
