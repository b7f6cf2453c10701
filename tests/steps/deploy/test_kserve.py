"""deploy with serving.kind kserve: the InferenceService against KServe v0.20's CRD schema, the storage layout the
runtimes read, and the whole rollout (create, canary, smoke predict over the v1/v2 protocol, promote or roll back)
against tests/kserve_test_server.py through the real kubernetes client."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelpress.common.errors import StepFailed, UserError
from modelpress.contract.publishing import KServeSpec
from modelpress.steps.deploy import kserve
from modelpress.steps.deploy.config import DeployConfig
from modelpress.steps.deploy.step import run as deploy_step
from modelpress.steps.push.config import PushConfig
from modelpress.steps.push.step import run as push
from tests import crd_schema

pytestmark = pytest.mark.integration

ISVC_SCHEMA = "serving.kserve.io_inferenceservices.json"
NAMESPACE = "models"


@pytest.fixture(scope="module")
def releases(trained_runs, tmp_path_factory) -> dict[str, Path]:
    """Runs `a` and `b` published as releases 1 and 2 of 'tiny'; each push's output holds its release.json."""
    root = tmp_path_factory.mktemp("kserve-published")
    for run in ("a", "b"):
        config = PushConfig(push={"uri": str(root / "registry"), "model_name": "tiny"})
        push(config, {"validations": [str(trained_runs[run] / "validation" / "train")]}, str(root / f"push-{run}"))
    return {"a": root / "push-a", "b": root / "push-b", "registry": root / "registry"}


@pytest.fixture
def server(tmp_path, monkeypatch):
    from tests.kserve_test_server import KServeTestServer

    instance = KServeTestServer()
    instance.start()
    monkeypatch.setenv("KUBECONFIG", str(instance.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # the kubeconfig, not an in-cluster account
    yield instance
    instance.stop()


def config(base: Path, **kserve_options) -> DeployConfig:
    options = {"namespace": NAMESPACE, "ready_timeout_s": 20, **kserve_options}
    return DeployConfig.model_validate({"serving": {"kind": "kserve", "model_name": "tiny", "base_path": str(base), "kserve": options}})


def deploy(trained_runs, releases, run: str, base: Path, output: Path, **kserve_options) -> dict:
    inputs = {"model": str(trained_runs[run] / "artifacts" / "train"), "validation": str(trained_runs[run] / "validation" / "train"),
              "release": str(releases[run])}  # fmt: skip
    return deploy_step(config(base, **kserve_options), inputs, str(output))


def golden(trained_runs, run: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(trained_runs[run] / "validation" / "train" / "golden.npz")
    return data["inputs"], data["outputs"]


def test_without_apply_the_manifest_and_the_runtime_layout_are_written(trained_runs, releases, tmp_path):
    result = deploy(trained_runs, releases, "a", tmp_path / "serving", tmp_path / "out")
    storage_uri = str(tmp_path / "serving" / "tiny" / "kserve" / "1")
    assert {k: result[k] for k in ("kind", "version", "runtime", "protocol", "storage_uri", "applied", "outcome")} == {
        "kind": "kserve", "version": 1, "runtime": "kserve-tensorflow-serving", "protocol": "v1",
        "storage_uri": storage_uri, "applied": False, "outcome": "written",
    }  # fmt: skip
    assert (Path(storage_uri) / "1" / "saved_model.pb").is_file() and (Path(storage_uri) / "1" / "variables").is_dir()
    manifest = yaml.safe_load((tmp_path / "out" / kserve.MANIFEST_FILE).read_text())
    crd_schema.validate(manifest, ISVC_SCHEMA)
    assert manifest["metadata"]["annotations"] == {"serving.kserve.io/enable-tag-routing": "true"}
    assert manifest["spec"]["predictor"] == {
        "serviceAccountName": "modelpress-runner",
        "model": {"modelFormat": {"name": "tensorflow", "version": "2"}, "runtime": "kserve-tensorflow-serving",
                  "protocolVersion": "v1", "storageUri": storage_uri},
        "canaryTrafficPercent": 10,
    }  # fmt: skip
    assert json.loads((tmp_path / "out" / "deployment.json").read_text())["outcome"] == "written"


def test_the_openvino_manifest_uses_ovms_and_protocol_v2_and_validates():
    manifest = kserve.inference_service("tiny", KServeSpec(canary_traffic_percent=25), kserve.runtime_for("openvino_int8"), "s3://b/tiny/kserve/3", 3, canary=True)
    crd_schema.validate(manifest, ISVC_SCHEMA)
    model = manifest["spec"]["predictor"]["model"]
    assert (model["runtime"], model["protocolVersion"], model["modelFormat"]) == ("kserve-openvino", "v2", {"name": "openvino"})
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 25
    wrong = json.loads(json.dumps(manifest))
    wrong["spec"]["predictor"]["canaryTrafficPercentage"] = 25
    with pytest.raises(Exception, match="canaryTrafficPercentage"):
        crd_schema.validate(wrong, ISVC_SCHEMA)
    with pytest.raises(UserError, match="KServe serves saved_model and openvino_\\* artifacts, not tflite_int8"):
        kserve.runtime_for("tflite_int8")


def test_a_release_rolls_out_as_a_canary_is_smoke_tested_and_promoted(trained_runs, releases, server, tmp_path):
    first = deploy(trained_runs, releases, "a", tmp_path / "serving", tmp_path / "out-1", apply=True)
    assert first["outcome"] == "promoted" and first["previous_revision"] is None
    assert server.traffic(NAMESPACE, "tiny") == {"tiny-predictor-00001": 100}
    assert "canaryTrafficPercent" not in server.services[(NAMESPACE, "tiny")]["spec"]["predictor"]  # a first release: no split

    second = deploy(trained_runs, releases, "b", tmp_path / "serving", tmp_path / "out-2", apply=True, canary_traffic_percent=20)
    print(json.dumps(second, indent=2))  # the flow's output, for the issue note
    assert (second["version"], second["revision"], second["previous_revision"]) == (2, "tiny-predictor-00002", "tiny-predictor-00001")
    assert second["url"] == f"{server.url}/predictors/tiny-predictor-00002" and second["max_abs_diff"] <= 1e-4
    assert ("POST", "/predictors/tiny-predictor-00002/v1/models/tiny:predict") in server.requests  # the canary itself was asked
    assert server.traffic(NAMESPACE, "tiny") == {"tiny-predictor-00002": 100}
    served = server.revisions["tiny-predictor-00002"].predict(golden(trained_runs, "b")[0])
    np.testing.assert_allclose(served, golden(trained_runs, "b")[1], atol=1e-4)
    assert json.loads((tmp_path / "out-2" / "deployment.json").read_text())["outcome"] == "promoted"


def test_a_canary_that_answers_wrong_is_rolled_back_and_nothing_is_recorded(trained_runs, releases, server, tmp_path):
    deploy(trained_runs, releases, "a", tmp_path / "serving", tmp_path / "out-1", apply=True)
    server.wrong_versions = {2}
    with pytest.raises(StepFailed, match=r"differ from the validated outputs by up to 0\.5.*rolled back: revision tiny-predictor-00001 keeps all traffic"):
        deploy(trained_runs, releases, "b", tmp_path / "serving", tmp_path / "out-2", apply=True)
    assert server.traffic(NAMESPACE, "tiny") == {"tiny-predictor-00001": 100}
    assert server.services[(NAMESPACE, "tiny")]["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert not (tmp_path / "out-2").exists()


def test_a_first_release_that_never_gets_ready_is_deleted(trained_runs, releases, server, tmp_path, monkeypatch):
    monkeypatch.setattr(kserve, "lay_out", lambda servable, uri, last: None)  # the storage holds no version: loading fails
    with pytest.raises(StepFailed, match=r"has no Ready new revision after 2s \(Ready: no integer version folder.*was deleted"):
        deploy(trained_runs, releases, "a", tmp_path / "serving", tmp_path / "out", apply=True, ready_timeout_s=2)
    assert server.services == {}


def test_unblessed_or_unpublished_models_are_refused_before_anything_is_written(trained_runs, releases, tmp_path):
    with pytest.raises(UserError, match="refusing to deploy train: it is not blessed"):
        deploy_step(config(tmp_path / "serving"), {"model": str(trained_runs["a"] / "artifacts" / "train"),
                    "validation": str(trained_runs["unblessed"]), "release": str(releases["a"])}, str(tmp_path / "out"))  # fmt: skip
    with pytest.raises(UserError, match="serving.kind kserve serves a published release: add a push section"):
        deploy_step(config(tmp_path / "serving"), {"model": str(trained_runs["a"] / "artifacts" / "train"),
                    "validation": str(trained_runs["a"] / "validation" / "train")}, str(tmp_path / "out"))  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "serving").exists()


def test_the_v2_protocol_runs_an_openvino_ir_like_the_openvino_runtime(trained_runs, server, tmp_path):
    """What deploy sends OVMS for an IR, against the test server's v2 predictor on a real IR of the trained model."""
    import openvino as ov

    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    (tmp_path / "ir" / "7").mkdir(parents=True)
    ov.save_model(ov.convert_model(str(trained_runs["a"] / "artifacts" / "train" / "saved_model")), str(tmp_path / "ir" / "7" / "model.xml"))
    manifest = kserve.inference_service("tiny-ir", KServeSpec(namespace=NAMESPACE), kserve.runtime_for("openvino_fp32"), str(tmp_path / "ir"), 7, canary=False)
    services = kserve.InferenceServices(NAMESPACE)
    services.create(manifest)
    isvc = kserve.wait_for_revision(services, "tiny-ir", None, 10)
    rows, expected = golden(trained_runs, "a")
    predicted = kserve.predict_v2(kserve.revision_url(isvc), "tiny-ir", rows)
    np.testing.assert_allclose(predicted, expected, atol=1e-4)
    assert ("GET", "/predictors/tiny-ir-predictor-00001/v2/models/tiny-ir") in server.requests
