"""deploy and rollback through the CLI against the TF Serving protocol test server (real gRPC and REST)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelpress.io import releases
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run as push
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(trained_runs, tmp_path_factory) -> Path:
    """A local registry holding run `a` as version 1 and run `b` as version 2 of 'tiny'."""
    root = tmp_path_factory.mktemp("published")
    for run in ("a", "b"):
        config = PushConfig(push={"uri": str(root / "registry"), "model_name": "tiny"})
        push(config, {"validations": [str(trained_runs[run] / "validation" / "train")]}, str(root / f"push-{run}"))
    return root / "registry"


@pytest.fixture
def server():
    from tests.serving_test_server import ServingTestServer

    instance = ServingTestServer(poll_s=0.2)
    instance.grpc_address, instance.rest_address = instance.start()
    yield instance
    instance.stop()


def golden(registry: Path, version: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(releases.version_uri(str(registry), "tiny", version) + "/validation/train/golden.npz")
    return data["inputs"], data["outputs"]


def deploy(cli, registry: Path, base: Path, release: int | str, *options: str):
    """`modelpress deploy` of a release given by its version number or by a registry label."""
    which = ["--version", str(release)] if isinstance(release, int) else ["--label", release]
    return cli("deploy", "tiny", "--registry", str(registry), *which, "--base-path", str(base), "--timeout", "30", *options)


def deployed_first(server, registry: Path, base: Path, **serving) -> None:
    """Version 1 deployed in this process, as the starting point of a test about the next deploy."""
    from modelpress.contract.publishing import ServingSpec
    from modelpress.steps.deploy.step import deploy_release

    spec = ServingSpec(model_name="tiny", grpc_address=server.grpc_address, timeout_s=30, **serving)
    assert deploy_release(spec, str(base), str(registry), 1, None)["stable"] == 1


def predict_stable(server, registry: Path) -> tuple[int, np.ndarray]:
    """(version that answered, outputs) of a gRPC Predict on the `stable` label, with a plain stub."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.version_label = "tiny", "stable"
    signature = next(iter(server.models["tiny"].versions.values())).signatures["serving_default"]
    (input_name,) = list(signature.inputs)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(golden(registry, 1)[0]))
    with grpc.insecure_channel(server.grpc_address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    (output,) = response.outputs.values()
    return response.model_spec.version.value, tf.make_ndarray(output)


def model_config(base: Path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse((base / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())


def test_deploy_moves_stable_after_a_canary_smoke_test_and_rollback_moves_it_back(server, registry, cli, tmp_path):
    base = tmp_path / "serving"
    first = deploy(cli, registry, base, 1, "--grpc-address", server.grpc_address)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert (result["version"], result["stable"], result["previous_stable"], result["reloaded"]) == (1, 1, None, True)
    assert result["smoke"]["rows"] == 8 and result["smoke"]["max_abs_diff"] <= 1e-4
    published = Path(releases.version_uri(str(registry), "tiny", 1)) / "artifacts/train/saved_model"
    deployed = sorted(p.relative_to(base / "tiny/1") for p in (base / "tiny/1").rglob("*") if p.is_file())
    assert deployed == sorted(p.relative_to(published) for p in published.rglob("*") if p.is_file())
    assert sorted(p.name for p in (base / "tiny").iterdir()) == ["1"]  # no staging folder left for TF Serving to see
    version, outputs = predict_stable(server, registry)
    assert version == 1 and np.allclose(outputs, golden(registry, 1)[1], atol=1e-5)

    second = deploy(cli, registry, base, "current", "--grpc-address", server.grpc_address)  # push moved it to 2
    assert second.returncode == 0, second.stderr
    assert "stable moved 1 -> 2" in second.stderr
    assert server.models["tiny"].labels == {"stable": 2}
    assert any(dict(c.model_config_list.config[0].version_labels) == {"stable": 1, "canary": 2} for c in server.reloads)
    version, outputs = predict_stable(server, registry)
    assert version == 2 and np.allclose(outputs, golden(registry, 2)[1], atol=1e-5)
    (entry,) = model_config(base).model_config_list.config
    assert (list(entry.model_version_policy.specific.versions), dict(entry.version_labels)) == ([1, 2], {"stable": 2})

    back = cli("rollback", "tiny", "--base-path", str(base), "--grpc-address", server.grpc_address, "--timeout", "30")
    assert back.returncode == 0, back.stderr
    assert (json.loads(back.stdout)["stable"], json.loads(back.stdout)["previous_stable"]) == (1, 2)
    assert server.models["tiny"].labels == {"stable": 1}
    assert predict_stable(server, registry)[0] == 1
    assert dict(model_config(base).model_config_list.config[0].version_labels) == {"stable": 1}

    again = cli("rollback", "tiny", "--base-path", str(base))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"modelpress: error: 'tiny' has had only version 1 as stable in {base}; there is nothing to roll back to")


def test_status_and_predict_over_rest(server, registry, cli, tmp_path):
    result = deploy(cli, registry, tmp_path / "serving", 1, "--grpc-address", server.grpc_address,
                    "--rest-address", server.rest_address)
    assert result.returncode == 0, result.stderr
    assert "GET /v1/models/tiny" in server.rest_requests
    assert "POST /v1/models/tiny/labels/canary:predict" in server.rest_requests
    assert server.models["tiny"].labels == {"stable": 1}


def test_failing_smoke_predict_leaves_stable_where_it_was(server, registry, cli, tmp_path):
    """The server's view of the base path (--mount-path) holds another model as version 2 than the one deployed."""
    base, mount = tmp_path / "serving", tmp_path / "mounted"
    published = {v: Path(releases.version_uri(str(registry), "tiny", v)) / "artifacts/train/saved_model" for v in (1, 2)}
    shutil.copytree(published[1], mount / "tiny/1")
    shutil.copytree(published[1], mount / "tiny/2")
    deployed_first(server, registry, base, mount_path=str(mount))

    failed = deploy(cli, registry, base, 2, "--grpc-address", server.grpc_address, "--mount-path", str(mount))
    assert failed.returncode == 3
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("modelpress: error: TF Serving's outputs from version 2 (canary) differ from the validated outputs by up to ")
    assert message.endswith("(serving.tolerance 0.0001); stable stays at version 1")
    assert server.models["tiny"].labels == {"stable": 1}
    assert predict_stable(server, registry)[0] == 1
    assert dict(model_config(base).model_config_list.config[0].version_labels) == {"stable": 1}
    state = json.loads((base / "_modelpress/tiny.json").read_text())
    assert (state["stable"], state["history"]) == (1, [1])


def test_version_not_available_before_the_timeout(server, registry, cli, tmp_path):
    base = tmp_path / "serving"
    deployed_first(server, registry, base)
    server.load_delay_s = 5
    slow = deploy(cli, registry, base, 2, "--grpc-address", server.grpc_address, "--timeout", "1")
    assert slow.returncode == 3
    assert slow.stderr.strip().splitlines()[-1] == (
        "modelpress: error: version 2 of 'tiny' was not AVAILABLE within 1s (last state LOADING); raise "
        "serving.timeout_s or check the server's logs; stable stays at version 1")
    assert server.models["tiny"].labels == {"stable": 1}
    assert dict(model_config(base).model_config_list.config[0].version_labels) == {"stable": 1}


def test_unreachable_server_is_one_clear_line_and_writes_nothing(registry, cli, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = deploy(cli, registry, tmp_path / "serving", 1, "--grpc-address", address)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"modelpress: error: TF Serving is unreachable at {address} (no gRPC connection within 5s); "
        "check serving.grpc_address and that the server is running")
    assert not (tmp_path / "serving").exists()


def test_without_a_server_deploy_writes_what_a_tf_serving_container_mounts(server, registry, cli, tmp_path):
    base = tmp_path / "serving"
    result = deploy(cli, registry, base, 1, "--mount-path", "/models")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reloaded"] is False
    assert f"no TF Serving address configured: wrote {base / 'models.config'} (stable -> version 1); no server was reloaded" in result.stderr
    config = model_config(base)
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, list(entry.model_version_policy.specific.versions), dict(entry.version_labels)) == (
        "tiny", "/models/tiny", [1], {"stable": 1})
    # The same file, with the container's mount replaced by where it is here, starts a server that serves it.
    entry.base_path = str(base / "tiny")
    server.reload(config)
    version, outputs = predict_stable(server, registry)
    assert version == 1 and np.allclose(outputs, golden(registry, 1)[1], atol=1e-5)


def test_unblessed_model_is_not_deployed(trained_runs, cli, tmp_path):
    config = json.dumps({"serving": {"model_name": "tiny", "base_path": str(tmp_path / "serving")}})
    result = cli("step", "deploy", "--config", config, "--input", f"model={trained_runs['a'] / 'artifacts/train'}",
                 "--input", f"validation={trained_runs['unblessed']}", "--output", str(tmp_path / "deployment"))
    # The task driver skips a publishing task whose validation refused its model, saying why; nothing is deployed.
    assert result.returncode == 0 and json.loads(result.stdout)["skipped"] is True
    assert "nothing to publish (train: accuracy " in json.loads(result.stdout)["reason"]
    assert not (tmp_path / "serving").exists()
    assert [p.name for p in (tmp_path / "deployment").iterdir()] == ["skipped.json"]


def test_without_a_model_input_the_artifact_its_validation_names_is_deployed(trained_runs, cli, tmp_path):
    """A search's deploy reads only the selection's validation: the artifact served is the one it validated."""
    config = json.dumps({"serving": {"model_name": "tiny", "base_path": str(tmp_path / "serving")}})
    validation = trained_runs["a"] / "validation" / "train"
    result = cli("step", "deploy", "--config", config, "--input", f"validation={validation}", "--output", str(tmp_path / "deployment"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1
    served = (tmp_path / "serving" / "tiny" / "1" / "saved_model.pb").read_bytes()
    assert served == (trained_runs["a"] / "artifacts" / "train" / "saved_model" / "saved_model.pb").read_bytes()


def test_version_in_the_base_path_with_other_files_is_never_replaced(registry, cli, tmp_path):
    base = tmp_path / "serving"
    other = Path(releases.version_uri(str(registry), "tiny", 2)) / "artifacts/train/saved_model"
    shutil.copytree(other, base / "tiny/1")
    result = deploy(cli, registry, base, 1)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"modelpress: error: version 1 of 'tiny' already exists in {base} with different files; versions never "
        "change: publish a new release, or deploy to another base path")
    assert (base / "tiny/1/saved_model.pb").read_bytes() == (other / "saved_model.pb").read_bytes()
    assert not (base / "models.config").exists()


def test_a_workflow_run_publishes_a_release_and_deploys_it_under_the_same_number(s3, cli, tiny_workflow, tmp_path):
    """The plan's push and deploy tasks: registry on S3, serving layout for a container that mounts it at /models."""
    registry, out = f"s3://{s3}/registry", tmp_path / "run"
    tiny_workflow.write_text(tiny_workflow.read_text() + f"push: {{uri: '{registry}', version: 7}}\nserving: {{mount_path: /models}}\n")
    result = cli("run", str(tiny_workflow), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert releases.list_versions(registry, "tiny") == [7]
    assert releases.read_manifest(registry, "tiny", 7)["serving_artifact"] == "train"
    assert (out / "serving/tiny/7/saved_model.pb").is_file()
    (entry,) = model_config(out / "serving").model_config_list.config
    assert (entry.base_path, list(entry.model_version_policy.specific.versions), dict(entry.version_labels)) == (
        "/models/tiny", [7], {"stable": 7})
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert (steps["push"]["version"], steps["deploy"]["version"], steps["deploy"]["reloaded"]) == (7, 7, False)
