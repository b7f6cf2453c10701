"""`modelpress upload`: compile a workflow and publish it to a Kubeflow Pipelines server through kfp's own client.

The pipeline is the workflow's name. Each version carries the workflow spec's sha256 (`schema.spec_hash`, the hash
push records in a release's lineage) in its description, and versions after the first are named
`<name>-<first 12 hex>`; the server names a new pipeline's first version after the pipeline. Uploading a workflow
whose spec a version already carries uploads nothing. Found by the CLI through the `modelpress.commands` entry point,
so the core never imports kfp; kfp itself is imported only once the command runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from modelpress.common.errors import UserError, require

SPEC_MARK = "workflow spec sha256:"
PAGE_SIZE = 100


@dataclass
class Uploaded:
    pipeline: str
    pipeline_id: str
    digest: str
    outcome: str  # CREATED (a new pipeline and its first version), ADDED (a version) or UNCHANGED (nothing uploaded)
    version_name: str
    version_id: str


CREATED, ADDED, UNCHANGED = "created", "added", "unchanged"


def version_name(workflow_name: str, digest: str) -> str:
    return f"{workflow_name}-{digest[:12]}"


def describe(description: str | None, digest: str) -> str:
    return f"{description or 'ModelPress workflow'} ({SPEC_MARK}{digest})"


def carries_spec(version, name: str, digest: str) -> bool:
    return version.name == name or f"{SPEC_MARK}{digest}" in (version.description or "")


def find_pipeline_id(client, name: str, namespace: str | None) -> str | None:
    """kfp's get_pipeline_id, with the namespace a multi-user server keeps the pipeline in."""
    by_name = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    if namespace is None:
        return client.get_pipeline_id(name)
    found = client.list_pipelines(filter=by_name, namespace=namespace, page_size=PAGE_SIZE).pipelines or []
    return found[0].pipeline_id if found else None


def pipeline_versions(client, pipeline_id: str) -> list:
    versions, token = [], ""
    while True:
        page = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=PAGE_SIZE)
        versions.extend(page.pipeline_versions or [])
        token = page.next_page_token
        if not token:
            return versions


def upload_workflow(workflow_path: str | Path, host: str, namespace: str | None = None) -> Uploaded:
    """Create the pipeline, or add a version named by the spec digest, unless a version already carries the spec."""
    require("kfp", "kfp")
    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    from modelpress.contract.schema import spec_hash
    from modelpress.execution.plan import load_workflow
    from modelpress.kfp.compiler import compile_workflow

    if not host.startswith(("http://", "https://")):
        raise UserError(f"--host '{host}' needs its scheme; pass the KFP API address, e.g. --host http://localhost:8888")
    workflow = load_workflow(workflow_path)
    digest = spec_hash(workflow)
    name, description = version_name(workflow.name, digest), describe(workflow.description, digest)
    with tempfile.TemporaryDirectory() as folder:
        package = str(compile_workflow(workflow_path, Path(folder) / f"{workflow.name}.yaml"))
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                # the client prints a UI link per upload (we print our own) and warns that it needs KFP 2
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(host=host, namespace=namespace or "kubeflow")
                pipeline_id = find_pipeline_id(client, workflow.name, namespace)
                if pipeline_id is None:
                    pipeline_id = client.upload_pipeline(package, workflow.name, description, namespace=namespace).pipeline_id
                    first = pipeline_versions(client, pipeline_id)[0]
                    return Uploaded(workflow.name, pipeline_id, digest, CREATED, first.name, first.pipeline_version_id)
                existing = next((v for v in pipeline_versions(client, pipeline_id) if carries_spec(v, name, digest)), None)
                if existing is not None:
                    return Uploaded(workflow.name, pipeline_id, digest, UNCHANGED, existing.name, existing.pipeline_version_id)
                version = client.upload_pipeline_version(package, name, pipeline_id=pipeline_id, description=description)
                return Uploaded(workflow.name, pipeline_id, digest, ADDED, version.name, version.pipeline_version_id)
        except (urllib3.exceptions.HTTPError, TimeoutError) as exc:  # TimeoutError: kfp gave up on /healthz
            raise UserError(f"cannot reach the KFP API at {host} ({type(exc).__name__}); check --host and that the server is up") from None
        except ApiException as exc:
            raise UserError(f"the KFP API at {host} refused the request: {exc.status} {exc.reason}: {(exc.body or '').strip()[:200]}") from None


def upload_command(workflow: str, host: str, namespace: str | None) -> int:
    done = upload_workflow(workflow, host, namespace)
    version = f"version {done.version_name} ({done.version_id})"
    if done.outcome == CREATED:
        print(f"created pipeline {done.pipeline} ({done.pipeline_id}) with {version} of spec {done.digest[:12]}")
    elif done.outcome == ADDED:
        print(f"added {version} of spec {done.digest[:12]} to pipeline {done.pipeline} ({done.pipeline_id})")
    else:
        print(f"unchanged: pipeline {done.pipeline} ({done.pipeline_id}) already has {version} of spec {done.digest[:12]}; nothing uploaded")
    return 0
