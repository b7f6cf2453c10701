"""The Airflow adapter: the DAG folder loads, bad workflow files are reported one by one, the pod of a GPU step is
what the cluster needs, and `dag.test()` runs a tiny workflow end to end in local mode."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import kubernetes_validate
import pytest
from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient

from modelpress.airflow.dag_factory import RUN_PREFIX, RUN_ROOT_ENV, WORKFLOWS_ENV, workflow_dags
from modelpress.airflow.operators import MODE_ENV
from modelpress.contract.images import image_for
from modelpress.execution.plan import build_plan, load_workflow
from tests.conftest import KUBE_CONFIG, ROOT

pytestmark = pytest.mark.integration

DAGS = ROOT / "dags"


@pytest.fixture
def workflows(tmp_path, monkeypatch):
    """An empty workflows folder the DAG file reads, in cluster (KubernetesPodOperator) mode."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    monkeypatch.delenv(MODE_ENV, raising=False)
    return folder


def test_dag_folder_has_one_dag_per_workflow_file_and_no_import_errors(monkeypatch):
    monkeypatch.delenv(WORKFLOWS_ENV, raising=False)
    monkeypatch.delenv(MODE_ENV, raising=False)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {p.stem for p in (DAGS / "workflows").glob("*.yaml")}


def test_bad_workflow_files_are_import_errors_that_do_not_hide_good_dags(workflows, adapter_workflow):
    adapter_workflow("good", folder=workflows)
    (workflows / "bad_schedule.yaml").write_text(adapter_workflow("x").read_text() + 'schedule: "0 25 * * *"\n')
    (workflows / "unknown_step.yaml").write_text(
        adapter_workflow("y").read_text() + "compress: [{technique: sparsify}]\n"
    )
    (workflows / "cycle.yaml").write_text(
        adapter_workflow("z").read_text() + "compress:\n  - {technique: prune, from: cluster}\n  - {technique: cluster}\n"
    )
    bag = DagBag(dag_folder=str(DAGS))
    assert "good" in bag.dag_ids and not {"bad_schedule", "unknown_step", "cycle"} & set(bag.dag_ids)
    (error,) = bag.import_errors.values()
    assert f"{workflows / 'bad_schedule.yaml'} line 15: schedule: schedule '0 25 * * *': 25 is out of range for the hour field (0-23)" in error
    assert f"{workflows / 'unknown_step.yaml'} line 15: compress.0.technique: unknown technique 'sparsify'" in error
    assert f"{workflows / 'cycle.yaml'} line 16: compress[0] (prune): from makes a cycle: prune, which starts from cluster" in error


def test_dag_takes_schedule_asset_retries_and_step_names_from_the_spec(workflows, adapter_workflow):
    adapter_workflow("weekly", folder=workflows, extra='schedule: "@weekly"\npush: {}\n')
    adapter_workflow("on_data", folder=workflows, extra="asset: s3://drops/digits\n")
    adapter_workflow("both", folder=workflows, extra='schedule: "0 3 * * 1"\nasset: s3://drops/digits\n')
    dags = workflow_dags()
    assert set(dags) == {"weekly", "on_data", "both"}

    weekly = dags["weekly"]
    assert weekly.schedule == "@weekly" and weekly.max_active_runs == 1
    # One mapped task group per image the targets run in: index i is that image's target i, convert -> validate.
    fanned = {"convert_tf", "validate_convert_tf", "convert_tensorrt", "validate_convert_tensorrt"}
    assert set(weekly.task_ids) == {"train", "validate_train", *fanned, "push", "report"}
    for image in ("tf", "tensorrt"):
        targets = weekly.task_group_dict[f"targets_{image}"]
        assert type(targets).__name__ == "MappedTaskGroup"
        assert set(targets.children) == {f"convert_{image}", f"validate_convert_{image}"}
    train = weekly.get_task("train")
    assert train.retries == 2 and train.retry_exponential_backoff and train.retry_delay == timedelta(seconds=30)
    assert set(weekly.get_task("push").upstream_task_ids) == {"validate_train", "validate_convert_tf", "validate_convert_tensorrt"}
    assert set(weekly.get_task("report").upstream_task_ids) == {"push", "validate_train", "validate_convert_tf", "validate_convert_tensorrt"}

    on_data, both = dags["on_data"].timetable, dags["both"].timetable  # a new data drop triggers a run
    assert [asset.uri for asset in on_data.asset_condition.objects] == ["s3://drops/digits"]
    assert [asset.uri for asset in both.asset_condition.objects] == ["s3://drops/digits"]
    assert both.timetable.expression == "0 3 * * 1"  # ... and so does the clock




def test_gpu_step_pod_has_image_command_gpu_limit_tolerations_and_node_selector(workflows, adapter_workflow, monkeypatch):
    connection = {"conn_type": "kubernetes", "extra": {"kube_config": KUBE_CONFIG}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
    adapter_workflow(
        "gpu",
        folder=workflows,
        extra="kubernetes: {namespace: ml, gpu_resource: nvidia.com/gpu, gpu_node_selector: {pool: a100},"
        " gpu_tolerations: [{key: dedicated, operator: Equal, value: ml, effect: NoExecute}],"
        " resources: {train: {memory_limit: 24Gi, timeout_minutes: 90}}, cpu_startup_timeout_seconds: 200}\npush: {}\n",
    )
    dag = workflow_dags()["gpu"]

    def rendered_pod(task_id: str):
        """What the operator sends to the API server at run time (the task instance only names the pod's labels)."""
        task = dag.get_task(task_id)
        ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task_id, map_index=-1, try_number=1)
        context = {"params": {**dag.params.dump(), "run_root": "s3://runs"}, "dag": dag, "run_id": "scheduled__2026-01-05", "ti": ti}
        task.render_template_fields(context)
        return task.build_pod_request_obj(context)

    pod = rendered_pod("train")

    container, sidecar = pod.spec.containers
    assert sidecar.name == "airflow-xcom-sidecar"  # it hands /airflow/xcom/return.json to Airflow as the XCom value
    assert container.image == image_for("tf", gpu=True) and container.image.endswith("-gpu")  # TF's CUDA build
    assert container.command == ["modelpress"]
    arguments = container.args
    assert arguments[:2] == ["step", "train"]
    assert arguments[arguments.index("--output") + 1] == "s3://runs/gpu/scheduled__2026-01-05/artifacts/train"
    assert arguments[-2:] == ["--result", "/airflow/xcom/return.json"] and "--overwrite" in arguments
    assert json.loads(arguments[arguments.index("--config") + 1])["train"]["epochs"] == 5
    overrides = [value for flag, value in zip(arguments, arguments[1:], strict=False) if flag == "--set"]
    assert overrides == ["train.epochs=5", "train.batch_size=32"]  # the run's form values (params), here the spec's
    # train's defaults, with the workflow's memory limit: requests to be scheduled, CPU, memory and GPU limits
    assert container.resources.requests == {"cpu": "4", "memory": "8Gi"}
    assert container.resources.limits == {"cpu": "8", "memory": "24Gi", "nvidia.com/gpu": "1"}
    [secret] = container.env_from  # required: a missing Secret stops the pod at start with "secret not found"
    assert (secret.secret_ref.name, secret.secret_ref.optional) == ("modelpress-s3", False)
    assert pod.metadata.namespace == "ml" and pod.spec.node_selector == {"pool": "a100"}
    assert [(t.key, t.operator, t.value, t.effect) for t in pod.spec.tolerations] == [("dedicated", "Equal", "ml", "NoExecute")]
    manifest = ApiClient().sanitize_for_serialization(pod)
    kubernetes_validate.validate(manifest, "1.30.0", strict=True)  # a pod the API server accepts

    assert pod.metadata.labels["task_id"] == "train" and pod.metadata.labels["run_id"] == "scheduled__2026-01-05"

    cpu = rendered_pod("validate_train").spec.containers[0]
    assert cpu.image == image_for("tf") and cpu.resources.limits == {"cpu": "4", "memory": "8Gi"}  # no GPU asked for
    assert cpu.resources.requests == {"cpu": "2", "memory": "4Gi"}

    # A GPU pod may wait for a node to scale up and pull a CUDA image; each step has its own time to finish.
    train, validate = dag.get_task("train"), dag.get_task("validate_train")
    assert (train.startup_timeout_seconds, validate.startup_timeout_seconds) == (900, 200)
    assert (train.execution_timeout, validate.execution_timeout) == (timedelta(minutes=90), timedelta(minutes=60))
    assert dag.get_task("push").execution_timeout == timedelta(minutes=30)
    assert cpu.args[cpu.args.index("--input") + 1] == "model=s3://runs/gpu/scheduled__2026-01-05/artifacts/train"


def test_targets_fan_out_per_image_and_tensorrt_runs_on_the_gpu_pool(workflows, adapter_workflow, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": KUBE_CONFIG}}))
    adapter_workflow("mixed", folder=workflows, targets="[tflite_int8, onnx, openvino_int8, tensorrt_fp16]", extra="push: {}\n")
    dag = workflow_dags()["mixed"]

    def mapped_formats(task_id: str) -> list[str]:
        mapped = [item["convert"] for item in dag.get_task(task_id).arguments._input.value]  # MappedArgument internals
        return [json.loads(a[a.index("--config") + 1])["format"] for a in mapped]

    assert mapped_formats("convert_tf") == ["tflite_int8", "onnx"]  # tf carries tf2onnx
    assert mapped_formats("convert_openvino") == ["openvino_int8"]
    assert mapped_formats("convert_tensorrt") == ["tensorrt_fp16"]
    validations = {f"validate_convert_{image}" for image in ("tf", "openvino", "tensorrt")}
    assert set(dag.get_task("push").upstream_task_ids) == {"validate_train", *validations}
    assert set(dag.get_task("validate_convert_tensorrt").upstream_task_ids) == {"convert_tensorrt", "validate_train"}
    for task_id, image, gpu in [
        ("convert_tensorrt", "tensorrt", True), ("validate_convert_tensorrt", "tensorrt", True),
        ("convert_openvino", "openvino", False), ("validate_convert_openvino", "openvino", False),
        ("convert_tf", "tf", False), ("validate_convert_tf", "tf", False),
    ]:  # fmt: skip
        task = dag.get_task(task_id)
        assert task.image == image_for(image), task_id  # convert and validate of a target share the image
        if gpu:
            assert task.container_resources.limits == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"} and task.node_selector == {"modelpress.io/pool": "gpu"}
            assert [(t.key, t.operator, t.effect) for t in task.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
        else:
            assert task.container_resources.limits == {"cpu": "4", "memory": "8Gi"} and not task.tolerations


def test_train_and_push_declare_the_data_and_the_release_as_lineage_assets(workflows):
    (workflows / "lineage.yaml").write_text(
        "name: lineage\nmodel: {zoo: mlp}\ndata: {source: csv, path: s3://drops/table.csv, label_column: label}\n"
        "push: {uri: s3://models/registry, model_name: tabular}\n"
    )
    dag = workflow_dags()["lineage"]
    assert [a.uri for a in dag.get_task("train").inlets] == ["s3://drops/table.csv"]
    (release,) = dag.get_task("push").outlets
    assert (release.uri, release.extra) == ("s3://models/registry/tabular", {"model": "tabular", "registry": "s3://models/registry"})


def test_a_folder_run_root_fails_the_pod_task_at_once_without_retries(workflows, adapter_workflow):
    from airflow.sdk.exceptions import AirflowFailException

    adapter_workflow("folder_root", folder=workflows, targets="[saved_model]")
    task = workflow_dags()["folder_root"].get_task("train")
    task.arguments = [a.replace(RUN_PREFIX, "/data/runs/x") for a in task.arguments]
    with pytest.raises(AirflowFailException, match="run_root must be an s3:// prefix on the cluster"):
        task.execute({})


def test_dag_test_runs_tiny_workflow_end_to_end_in_local_mode(airflow_db, workflows, adapter_workflow, monkeypatch, tmp_path):
    registry, serving = tmp_path / "registry", tmp_path / "serving"
    adapter_workflow("tiny", folder=workflows, extra=f"push: {{uri: {registry}}}\nserving: {{base_path: {serving}}}\n")
    monkeypatch.setenv(MODE_ENV, "local")
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "runs"))
    dag = workflow_dags()["tiny"]
    run = dag.test()

    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    # TensorRT fans out on its own (its own image, a GPU); skipped on this machine (no GPU), and only its own chain is
    tensorrt = {("convert_tensorrt", 0), ("validate_convert_tensorrt", 0)}
    assert {k: v for k, v in states.items() if k in tensorrt} == dict.fromkeys(tensorrt, "skipped")
    assert {v for k, v in states.items() if k not in tensorrt} == {"success"}, states
    assert {k for k in states if k[0] in ("convert_tf", "validate_convert_tf")} == {("convert_tf", 0), ("validate_convert_tf", 0)}
    # A mapped instance is shown under the target it runs, not only its index.
    assert dag.get_task("convert_tf").map_index_template == "{{ task.target }}"
    shown = {ti.task_id: ti.rendered_map_index for ti in run.get_task_instances() if ti.map_index >= 0}
    # validate_convert_tensorrt never started (its convert skipped), so nothing rendered its template
    assert shown == {"convert_tf": "tflite_fp32", "validate_convert_tf": "tflite_fp32", "convert_tensorrt": "tensorrt_fp16", "validate_convert_tensorrt": "0"}
    run_folder = tmp_path / "runs" / "tiny" / run.run_id
    blessings = {p.parent.name: json.loads(p.read_text()) for p in run_folder.glob("validation/*/blessing.json")}
    assert set(blessings) == {"train", "tflite_fp32"} and all(b["blessed"] for b in blessings.values())
    manifest = json.loads((registry / "tiny" / "1" / "manifest.json").read_text())
    assert sorted(a["name"] for a in manifest["artifacts"]) == ["tflite_fp32", "train"]
    assert (serving / "tiny" / "1" / "saved_model.pb").exists()
    # The run's report, as `modelpress run` writes it: every validated artifact with its accuracy.
    summary = json.loads((run_folder / "summary.json").read_text())
    accuracies = {row["name"]: row["metrics"]["accuracy"] for row in summary["artifacts"]}
    assert accuracies == {name: blessing["metrics"]["accuracy"] for name, blessing in blessings.items()}
    page = (run_folder / "report.html").read_text()
    assert all(f"<td>{name}</td>" in page and f"<td>{accuracy:.4f}</td>" in page for name, accuracy in accuracies.items())
    assert (run_folder / "report.md").read_text().startswith("# ModelPress run: tiny")
    # Lineage: push names the releases it publishes (a local registry is a file:// asset).
    assert [(a.uri, a.extra) for a in dag.get_task("push").outlets] == [
        ((registry / "tiny").as_uri(), {"model": "tiny", "registry": str(registry)})
    ]
    assert [t.id for t in build_plan(load_workflow(workflows / "tiny.yaml"))][-2:] == ["push", "deploy"]


def test_dag_params_form_overrides_the_specs_epochs_in_a_run(airflow_db, workflows, adapter_workflow, monkeypatch, tmp_path):
    adapter_workflow("knobs", folder=workflows, targets="[saved_model]")
    monkeypatch.setenv(MODE_ENV, "local")
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "runs"))
    dag = workflow_dags()["knobs"]
    assert dag.params["epochs"] == 5 and dag.params.get_param("epochs").description == "passes over the training split"
    assert dag.params["min_accuracy"] == 0.6 and dag.params.get_param("min_accuracy").description == "lowest test accuracy allowed"
    run = dag.test(run_conf={"epochs": 2})

    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"train": "success", "validate_train": "success", "report": "success"}
    trained = json.loads((tmp_path / "runs" / "knobs" / run.run_id / "artifacts" / "train" / "artifact.json").read_text())
    assert trained["details"]["epochs_run"] == 2 and trained["details"]["train"]["epochs"] == 2


def test_a_changed_data_file_retrains_on_the_next_run(airflow_db, workflows, monkeypatch, tmp_path):
    """Airflow caches nothing: each run trains on the data as it is then, and records that data's digest (the key
    Kubeflow's cache uses)."""
    table = tmp_path / "table.csv"
    rows = [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(120)]
    table.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    (workflows / "weekly.yaml").write_text(
        f"name: weekly\nmodel: {{zoo: mlp, params: {{hidden: [8]}}}}\ndata: {{source: csv, path: {table}, label_column: label}}\n"
        "train: {epochs: 1}\ntargets: [saved_model]\n"
    )
    monkeypatch.setenv(MODE_ENV, "local")
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "runs"))

    def trained() -> dict:
        run = workflow_dags()["weekly"].test()
        assert {ti.task_id: ti.state for ti in run.get_task_instances()}["train"] == "success"
        return json.loads((tmp_path / "runs" / "weekly" / run.run_id / "artifacts" / "train" / "artifact.json").read_text())

    before = trained()
    table.write_text(table.read_text().replace(rows[0], "6,4,1", 1))  # one row changes
    after = trained()
    assert after["data_hash"] != before["data_hash"] and after["details"]["data_digest"] != before["details"]["data_digest"]


def test_dag_test_publishes_nothing_when_nothing_is_blessed(airflow_db, workflows, adapter_workflow, monkeypatch, tmp_path):
    registry, serving = tmp_path / "registry", tmp_path / "serving"
    extra = f"push: {{uri: {registry}}}\nserving: {{base_path: {serving}}}\n"
    adapter_workflow("strict", folder=workflows, targets="[saved_model]", extra=extra)
    path = workflows / "strict.yaml"
    path.write_text(path.read_text().replace("min_accuracy: 0.6", "min_accuracy: 0.999"))
    monkeypatch.setenv(MODE_ENV, "local")
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "runs"))
    run = workflow_dags()["strict"].test()

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {
        "train": "success", "validate_train": "success", "validate_train_blessed": "success",
        "push": "skipped", "deploy": "skipped", "report": "success",
    }  # fmt: skip
    blessing = json.loads((tmp_path / "runs" / "strict" / run.run_id / "validation" / "train" / "blessing.json").read_text())
    assert blessing["blessed"] is False
    assert not registry.exists() and not serving.exists()


def test_dag_file_imports_no_tensorflow_and_passes_ruff_air():
    probe = "import sys, dags.modelpress_workflows; print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"  # the last line; Airflow logs to stdout before it
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "AIR", str(DAGS)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_dag_test_of_a_search_publishes_the_cheapest_recipe_meeting_the_target_and_skips_later_rungs(airflow_db, workflows, adapter_workflow, monkeypatch, tmp_path):
    registry = tmp_path / "registry"
    search = (
        "search:\n  target: {max_size_ratio: 0.5}\n  ladder:\n"
        "    - {name: ptq, compress: [{technique: quantize, mode: int8}]}\n"
        "    - {name: qat, compress: [{technique: quantize, mode: qat}, {technique: quantize, mode: int8}]}\n"
    )
    adapter_workflow("searched", folder=workflows, targets="[saved_model]", extra=f"push: {{uri: {registry}}}\n{search}")
    monkeypatch.setenv(MODE_ENV, "local")
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "runs"))
    run = workflow_dags()["searched"].test()

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    # The QAT rung's search task found the PTQ artifact within the target: it skipped, and the rung with it (untrained).
    rung = {"search_qat", "qat-quantize", "qat-convert_tf", "validate_qat-quantize", "validate_qat-convert_tf"}
    assert {task: states[task] for task in rung} == dict.fromkeys(rung, "skipped")
    assert {task: state for task, state in states.items() if task not in rung} == dict.fromkeys(
        ["train", "validate_train", "search_ptq", "ptq-convert_tf", "validate_ptq-convert_tf", "select", "push", "report"], "success"
    )
    run_folder = tmp_path / "runs" / "searched" / run.run_id
    assert not (run_folder / "artifacts" / "qat-quantize" / "artifact.json").exists()
    manifest = json.loads((registry / "searched" / "1" / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["ptq-tflite_int8"]
    # The run's report carries the search table, as `modelpress run` writes it.
    summary = json.loads((run_folder / "summary.json").read_text())
    assert (summary["search"]["selected"], summary["search"]["met"]) == ("ptq-tflite_int8", True)
    assert [(row["rung"], row["skipped"]) for row in summary["search"]["rows"]] == [("train", False), ("ptq", False), ("qat", True)]
    assert {row["name"] for row in summary["artifacts"]} == {"train", "ptq-tflite_int8"}
