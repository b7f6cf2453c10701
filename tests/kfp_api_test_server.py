"""A Kubeflow Pipelines API test server: the v2beta1 pipeline endpoints kfp.Client's upload and listing calls use, with
in-memory state. No KFP server runs on the test machines. It follows the KFP API server (backend/api/v2beta1/
pipeline.proto, backend/src/apiserver/server/pipeline_upload_server.go) where the client depends on it:
- `POST /apis/v2beta1/pipelines/upload?name=&display_name=&description=&namespace=` (multipart `uploadfile`): creates
  the pipeline and its first version, named and described like the pipeline; 409 when the name is taken.
- `POST /apis/v2beta1/pipelines/upload_version?name=&pipelineid=&description=`: adds a version; 404 for an unknown
  pipeline, 409 for a version name the pipeline has.
- `GET /apis/v2beta1/healthz` (the client asks whether the server is multi-user): single-user.
- `GET /apis/v2beta1/pipelines?namespace=&filter=&page_size=&page_token=`: EQUALS predicates on name or display_name.
- `GET /apis/v2beta1/pipelines/{id}`, `GET /apis/v2beta1/pipelines/{id}/versions[?page_size=&page_token=]`,
  `GET /apis/v2beta1/pipelines/{id}/versions/{version_id}`.
A version's `pipeline_spec` is the uploaded YAML as a struct; with a platform document (what kfp.kubernetes adds) it is
`{"pipeline_spec": ..., "platform_spec": ...}`, as the server's YamlStringToPipelineSpecStruct builds it.
Errors are google.rpc.Status JSON. Test code only: never imported by the product.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

import yaml

from tests.json_http import JsonHandler, LoopbackServer

PIPELINE = re.compile(r"^/apis/v2beta1/pipelines/(?P<id>[^/]+)(?:/versions(?:/(?P<version>[^/]+))?)?$")
EQUALS = (1, "EQUALS")
GRPC_CODES = {400: 3, 404: 5, 409: 6}


def uploaded_file(content_type: str, body: bytes) -> bytes | None:
    """The `uploadfile` part of a multipart/form-data body."""
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_payload(decode=True)
    return None


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def spec_struct(text: str) -> dict:
    documents = [d for d in yaml.safe_load_all(text) if d]
    platform = next((d for d in documents if "platforms" in d), None)
    pipeline = next((d for d in documents if "platforms" not in d), None)
    if pipeline is None:
        raise ValueError("No pipeline spec provided in yaml doc")
    return pipeline if platform is None else {"pipeline_spec": pipeline, "platform_spec": platform}


class KfpApiTestServer(LoopbackServer):
    def __init__(self):
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}  # pipeline id -> versions, oldest first
        self.uploads: list[str] = []  # the path of every upload request
        self._lock = threading.Lock()

    def start(self) -> str:
        server = self

        class Handler(JsonHandler):
            def do_GET(self):
                self.answer(*server.get(urlparse(self.path)))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.answer(*server.post(urlparse(self.path), uploaded_file(self.headers.get("Content-Type", ""), body)))

        return self.serve(Handler)

    @staticmethod
    def error(code: int, message: str) -> tuple[int, dict]:
        return code, {"error": message, "code": GRPC_CODES.get(code, 13), "message": message, "details": []}

    def post(self, url, upload: bytes | None) -> tuple[int, dict]:
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if upload is None:
            return self.error(400, "Failed to read pipeline from file")
        try:
            spec = spec_struct(upload.decode())
        except (ValueError, yaml.YAMLError) as exc:
            return self.error(400, f"Failed to read a pipeline spec file: {exc}")
        with self._lock:
            self.uploads.append(url.path)
            if url.path == "/apis/v2beta1/pipelines/upload":
                return self.create_pipeline(query, spec)
            if url.path == "/apis/v2beta1/pipelines/upload_version":
                return self.create_version(query, spec)
        return self.error(404, f"no endpoint POST {url.path}")

    def create_pipeline(self, query: dict, spec: dict) -> tuple[int, dict]:
        name = query.get("name") or query.get("display_name")
        namespace = query.get("namespace", "")
        if not name:
            return self.error(400, "pipeline name is empty")
        if any(p["name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            return self.error(409, "Failed to create a pipeline and a pipeline version")
        pipeline = {
            "pipeline_id": str(uuid.uuid4()), "name": name, "display_name": query.get("display_name") or name,
            "description": query.get("description", ""), "created_at": timestamp(), "namespace": namespace,
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        self.add_version(pipeline["pipeline_id"], pipeline["name"], pipeline["display_name"], pipeline["description"], spec)
        return 200, pipeline

    def create_version(self, query: dict, spec: dict) -> tuple[int, dict]:
        pipeline_id, name = query.get("pipelineid", ""), query.get("name") or query.get("display_name")
        if pipeline_id not in self.pipelines:
            return self.error(404, f"Pipeline {pipeline_id} not found")
        if not name:
            return self.error(400, "pipeline version name is empty")
        if any(v["name"] == name for v in self.versions[pipeline_id]):
            return self.error(409, "Failed to create a pipeline version")
        return 200, self.add_version(pipeline_id, name, query.get("display_name") or name, query.get("description", ""), spec)

    def add_version(self, pipeline_id: str, name: str, display_name: str, description: str, spec: dict) -> dict:
        version = {
            "pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "name": name,
            "display_name": display_name, "description": description, "created_at": timestamp(), "pipeline_spec": spec,
        }
        self.versions[pipeline_id].append(version)
        return version

    def get(self, url) -> tuple[int, dict]:
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        with self._lock:
            if url.path == "/apis/v2beta1/healthz":
                return 200, {"multi_user": False, "pipeline_store": "database"}
            if url.path == "/apis/v2beta1/pipelines":
                found = [p for p in self.pipelines.values() if p["namespace"] == query.get("namespace", "")]
                for predicate in json.loads(query.get("filter") or "{}").get("predicates", []):
                    if predicate.get("operation") not in EQUALS:
                        return self.error(400, f"unsupported filter operation {predicate.get('operation')}")
                    found = [p for p in found if p.get(predicate["key"]) == predicate.get("string_value", predicate.get("stringValue"))]
                return self.page(found, "pipelines", query)
            match = PIPELINE.match(url.path)
            if match is None or match["id"] not in self.pipelines:
                return self.error(404, f"no pipeline at {url.path}")
            if "/versions" not in url.path:
                return 200, self.pipelines[match["id"]]
            versions = self.versions[match["id"]]
            if match["version"] is None:
                return self.page(versions, "pipeline_versions", query)
            found = [v for v in versions if v["pipeline_version_id"] == match["version"]]
            return (200, found[0]) if found else self.error(404, f"Pipeline version {match['version']} not found")

    @staticmethod
    def page(items: list[dict], key: str, query: dict) -> tuple[int, dict]:
        start, size = int(query.get("page_token") or 0), int(query.get("page_size") or 20)
        body = {key: items[start:start + size], "total_size": len(items)}
        if start + size < len(items):
            body["next_page_token"] = str(start + size)
        return 200, body
