"""`modelpress upload` against a KFP API test server that speaks the v2beta1 REST endpoints kfp.Client calls: the
first upload creates the pipeline, an unchanged spec uploads nothing, a changed spec adds a version named by its
digest, the stored spec is the compiled IR, and a wrong or unreachable host is one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from modelpress.cli.main import main
from modelpress.contract.schema import spec_hash
from modelpress.execution.plan import load_workflow
from modelpress.kfp.compiler import compile_workflow
from tests.conftest import ROOT, free_port
from tests.kfp_api_test_server import KfpApiTestServer

pytestmark = pytest.mark.integration


@pytest.fixture
def kfp_api():
    server = KfpApiTestServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def source_entry_points(tmp_path_factory, monkeypatch):
    """The entry points this source tree's pyproject.toml declares, installed as pip would (a dist-info folder on the
    path, found first): the CLI then finds `modelpress upload` through importlib.metadata whatever the environment
    was installed from."""
    site = tmp_path_factory.mktemp("site")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = site / f"modelpress-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: modelpress\nVersion: {project['version']}\n")
    groups = {"console_scripts": project["scripts"], **project["entry-points"]}
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) for group, points in groups.items())
    )
    monkeypatch.syspath_prepend(str(site))


def upload(capsys, workflow: Path, *options: str) -> tuple[int, str, str]:
    code = main(["upload", str(workflow), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_first_upload_creates_the_pipeline_then_the_same_spec_uploads_nothing(kfp_api, adapter_workflow, capsys):
    workflow = adapter_workflow("digits-small")
    digest = spec_hash(load_workflow(workflow))[:12]

    code, out, err = upload(capsys, workflow, "--host", kfp_api.url)
    assert code == 0, err
    [pipeline] = kfp_api.pipelines.values()
    [version] = kfp_api.versions[pipeline["pipeline_id"]]
    assert pipeline["name"] == pipeline["display_name"] == "digits-small"
    assert out.startswith(f"created pipeline digits-small ({pipeline['pipeline_id']})") and digest in out

    code, out, err = upload(capsys, workflow, "--host", kfp_api.url)
    assert code == 0, err
    assert out.startswith("unchanged:") and "nothing uploaded" in out and version["name"] in out
    assert kfp_api.uploads == ["/apis/v2beta1/pipelines/upload"]
    assert len(kfp_api.versions[pipeline["pipeline_id"]]) == 1


def test_a_changed_spec_adds_a_version_named_by_its_digest_holding_the_compiled_ir(kfp_api, adapter_workflow, capsys, tmp_path):
    workflow = adapter_workflow("digits-small")
    assert upload(capsys, workflow, "--host", kfp_api.url)[0] == 0
    workflow.write_text(workflow.read_text().replace("epochs: 5", "epochs: 7"))
    digest = spec_hash(load_workflow(workflow))[:12]

    code, out, err = upload(capsys, workflow, "--host", kfp_api.url)
    assert code == 0, err
    [pipeline_id] = kfp_api.versions
    first, second = kfp_api.versions[pipeline_id]
    assert second["name"] == f"digits-small-{digest}"
    assert out.startswith(f"added version digits-small-{digest} ({second['pipeline_version_id']})")
    assert first["pipeline_spec"] != second["pipeline_spec"]

    pipeline_spec, platform_spec = yaml.safe_load_all(compile_workflow(workflow, tmp_path / "ir.yaml").read_text())
    assert second["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    epochs = pipeline_spec["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"]
    assert epochs == 7

    assert upload(capsys, workflow, "--host", kfp_api.url)[1].startswith("unchanged:")
    assert len(kfp_api.versions[pipeline_id]) == 2


def test_a_namespace_keeps_its_own_pipeline(kfp_api, adapter_workflow, capsys):
    workflow = adapter_workflow("digits-small")
    assert upload(capsys, workflow, "--host", kfp_api.url)[0] == 0
    code, out, err = upload(capsys, workflow, "--host", kfp_api.url, "--namespace", "team-ml")
    assert code == 0, err
    assert out.startswith("created pipeline digits-small")
    assert sorted(p["namespace"] for p in kfp_api.pipelines.values()) == ["", "team-ml"]


def test_an_unreachable_host_is_one_line(adapter_workflow, capsys):
    code, out, err = upload(capsys, adapter_workflow("digits-small"), "--host", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("modelpress: error: cannot reach the KFP API at http://127.0.0.1:") and "--host" in err


def test_a_host_without_scheme_is_refused_before_anything_is_sent(kfp_api, adapter_workflow, capsys):
    code, _, err = upload(capsys, adapter_workflow("digits-small"), "--host", kfp_api.url.removeprefix("http://"))
    assert code == 2 and "needs its scheme" in err
    assert kfp_api.pipelines == {}
