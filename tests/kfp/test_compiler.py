"""The Kubeflow adapter: every example compiles and its committed IR is current; the IR carries parameters, GPU
requests, placement, the fan-out and the blessing gate; kfp.local runs a tiny workflow end to end."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import yaml

from modelpress.contract.images import image_for
from modelpress.execution.plan import load_workflow
from modelpress.kfp.compiler import build_pipeline
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
COMPILED = ROOT / "pipelines" / "compiled"
REFRESH = "refresh with: modelpress compile kfp examples/*.yaml -o pipelines/compiled/"


def read_ir(path: Path) -> tuple[dict, dict]:
    """The pipeline spec and the kubernetes platform spec of a compiled pipeline."""
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def compiled(cli, workflow: Path, folder: Path) -> tuple[dict, dict]:
    """`modelpress compile kfp` as a user runs it, then the IR it wrote."""
    result = cli("compile", "kfp", str(workflow), "-o", str(folder / "p.yaml"))
    assert result.returncode == 0, result.stderr
    return read_ir(folder / "p.yaml")


def parameter_defaults(pipeline: dict) -> dict:
    """The parameters a user sets in the Kubeflow UI, with their defaults (the spec's values)."""
    return {name: p["defaultValue"] for name, p in pipeline["root"]["inputDefinitions"]["parameters"].items()}


def all_dag_tasks(pipeline: dict) -> dict[str, dict]:
    """Every step task in the pipeline (root and nested DAGs: ParallelFor, If) by its name in both orchestrators: the
    display name without the targets a fan-out's task lists, "convert_tf (tflite_fp32, onnx)" -> "convert_tf"."""
    components = pipeline["components"]
    dags = [pipeline["root"]["dag"], *(c["dag"] for c in components.values() if "dag" in c)]
    tasks = [t for dag in dags for t in dag["tasks"].values()]
    steps = [t for t in tasks if "executorLabel" in components[t["componentRef"]["name"]] and t["taskInfo"]["name"] != "data_digest"]
    return {t["taskInfo"]["name"].split(" (")[0]: t for t in steps}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_compiles_and_committed_pipeline_is_current(example, cli, tmp_path):
    result = cli("compile", "kfp", str(example), "-o", str(tmp_path / "p.yaml"))
    assert result.returncode == 0, result.stderr
    committed = COMPILED / f"{example.stem}.yaml"
    assert committed.exists(), f"{committed} is missing; {REFRESH}"
    assert committed.read_text() == (tmp_path / "p.yaml").read_text(), f"{committed} is stale; {REFRESH}"


def test_no_compiled_pipeline_without_its_example():
    orphans = {p.stem for p in COMPILED.glob("*.yaml")} - {e.stem for e in EXAMPLES}
    assert not orphans, f"pipelines/compiled/ has pipelines of deleted examples: {sorted(orphans)}"


def test_ir_has_parameters_gpu_placement_fan_out_and_blessing_gate(cli, adapter_workflow, tmp_path):
    workflow = adapter_workflow(
        targets="[saved_model, tflite_fp32, onnx]",
        extra="push: {uri: s3://models/registry}\nserving: {base_path: s3://models/serving}\n"
        "kubernetes: {gpu_node_selector: {pool: a100}, gpu_tolerations: [{key: gpu, operator: Equal, value: 'yes'}]}\n"
    )
    pipeline, platform = compiled(cli, workflow, tmp_path)
    assert parameter_defaults(pipeline) == {
        "epochs": 5, "batch_size": 32, "min_accuracy": 0.6, "push_uri": "s3://models/registry"
    }  # fmt: skip

    tasks = all_dag_tasks(pipeline)
    # One display name serves every item of a ParallelFor: it lists the targets the fan-out runs.
    assert tasks["convert_tf"]["taskInfo"]["name"] == "convert_tf (tflite_fp32, onnx)"
    assert tasks["validate_convert_tf"]["taskInfo"]["name"] == "validate_convert_tf (tflite_fp32, onnx)"
    assert tasks["train"]["taskInfo"]["name"] == "train"
    assert set(tasks) == {"train", "validate_train", "convert_tf", "validate_convert_tf", "push", "deploy", "report"}
    assert [names for names in tasks["report"]["dependentTasks"] if "push" in names] == ["push"]  # reports the release
    executors = pipeline["deploymentSpec"]["executors"]

    def executor(name: str) -> str:
        component = pipeline["components"][tasks[name]["componentRef"]["name"]]
        return component["executorLabel"]

    train = executors[executor("train")]["container"]
    assert train["image"] == image_for("tf", gpu=True) and train["image"].endswith("-gpu")  # TF's CUDA build
    # KFP's open-source driver makes the accelerator type the name of the pod's resource limit: the resource name.
    accelerator = train["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1")
    assert platform[executor("train")]["nodeSelector"] == {"labels": {"pool": "a100"}}
    assert platform[executor("train")]["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]
    convert = executors[executor("convert_tf")]["container"]
    assert convert["image"] == image_for("tf") and "accelerator" not in convert["resources"]  # tf carries tf2onnx for the onnx target
    assert "tolerations" not in platform[executor("convert_tf")]
    for container in (executors[executor(name)]["container"] for name in tasks):
        assert "pip install" not in " ".join(container["command"])  # the image carries modelpress

    fan_out = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    items = json.loads(fan_out["parameterIterator"]["items"]["raw"])
    assert [json.loads(item["convert"])["format"] for item in items] == ["tflite_fp32", "onnx"]
    assert [json.loads(item["validate"])["name"] for item in items] == ["tflite_fp32", "onnx"]

    gate = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "triggerPolicy" in t)
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--validate-Output'] == true"
    gated = pipeline["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert [t["taskInfo"]["name"] for t in gated.values()] == ["deploy"]

    assert tasks["train"]["cachingOptions"] == {"enableCache": True}
    assert tasks["validate_convert_tf"]["cachingOptions"] == {"enableCache": True}
    assert tasks["push"]["cachingOptions"] == {} and tasks["deploy"]["cachingOptions"] == {}  # publishing always runs


def test_targets_fan_out_per_image_that_carries_their_runtime_and_tensorrt_runs_on_the_gpu_pool(cli, adapter_workflow, tmp_path):
    """A fan-out carries one image and one resource request: targets fan out per image that has their runtime (tf:
    TFLite and tf2onnx; openvino: OpenVINO; tensorrt: TensorRT, on a GPU). Convert and validate of a target share
    that image, and push reads every fan-out's validations."""
    workflow = adapter_workflow(targets="[tflite_int8, onnx, openvino_int8, tensorrt_fp16]", extra="push: {uri: s3://models/registry}\n")
    pipeline, platform = compiled(cli, workflow, tmp_path)
    tasks = all_dag_tasks(pipeline)
    fanned = {f"{kind}_{image}" for kind in ("convert", "validate_convert") for image in ("tf", "openvino", "tensorrt")}
    assert set(tasks) == {"train", "validate_train", *fanned, "push", "report"}
    executors = pipeline["deploymentSpec"]["executors"]

    def executor(name: str) -> str:
        return pipeline["components"][tasks[name]["componentRef"]["name"]]["executorLabel"]

    for name in ("convert_tensorrt", "validate_convert_tensorrt"):
        container = executors[executor(name)]["container"]
        assert container["image"] == image_for("tensorrt")
        accelerator = container["resources"]["accelerator"]
        assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1")
        assert platform[executor(name)]["nodeSelector"] == {"labels": {"modelpress.io/pool": "gpu"}}
        assert platform[executor(name)]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    loops = {t["taskInfo"]["name"]: t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t}
    formats = {name: [json.loads(i["convert"])["format"] for i in json.loads(t["parameterIterator"]["items"]["raw"])] for name, t in loops.items()}
    assert formats == {"targets_tf": ["tflite_int8", "onnx"], "targets_openvino": ["openvino_int8"], "targets_tensorrt": ["tensorrt_fp16"]}
    for image in ("tf", "openvino"):
        for name in (f"convert_{image}", f"validate_convert_{image}"):
            container = executors[executor(name)]["container"]
            assert container["image"] == image_for(image) and "accelerator" not in container["resources"], name
            assert "tolerations" not in platform[executor(name)]

    names = {key: task["taskInfo"]["name"] for key, task in pipeline["root"]["dag"]["tasks"].items()}
    assert {names[key] for key in tasks["push"]["dependentTasks"]} == {*loops, "validate_train"}
    assert set(tasks["push"]["inputs"]["artifacts"]) == {"validations_tf", "validations_openvino", "validations_tensorrt", "validations_1"}


def test_vertex_platform_requests_its_accelerator_type(cli, adapter_workflow, tmp_path):
    workflow = adapter_workflow(targets="[saved_model]", extra="kubernetes: {platform: vertex, gpu_accelerator: NVIDIA_L4}\n")
    pipeline, _ = compiled(cli, workflow, tmp_path)
    executors = pipeline["deploymentSpec"]["executors"]
    train = pipeline["components"][all_dag_tasks(pipeline)["train"]["componentRef"]["name"]]["executorLabel"]
    assert executors[train]["container"]["resources"]["accelerator"]["resourceType"] == "NVIDIA_L4"


@pytest.mark.parametrize(
    "extra, key",
    [
        ("push: {uri: /srv/registry}\n", "push.uri: '/srv/registry' is a path on the pod's own disk"),
        ("serving: {base_path: models}\n", "serving.base_path: 'models' is a path on the pod's own disk"),
        ("kubernetes: {image_tag: null}\n", None),
    ],
    ids=["push_local", "serving_local", "defaults_ok"],
)
def test_outputs_on_a_pods_own_disk_are_a_compile_error_naming_the_key(cli, adapter_workflow, tmp_path, extra, key):
    result = cli("compile", "kfp", str(adapter_workflow(targets="[saved_model]", extra=extra)), "-o", str(tmp_path / "p.yaml"))
    if key is None:  # the defaults (<run>/registry, <run>/serving) live in the run's own storage
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2 and key in result.stderr and "s3://" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.yaml").exists()


def test_a_builder_module_missing_from_the_images_is_a_compile_error(cli, adapter_workflow, tmp_path):
    workflow = adapter_workflow(targets="[saved_model]")
    workflow.write_text(workflow.read_text().replace("  zoo: mlp\n  params: {hidden: [32]}\n", "  builder: acme_models.nets:build\n"))
    result = cli("compile", "kfp", str(workflow), "-o", str(tmp_path / "p.yaml"))
    assert result.returncode == 2 and "module 'acme_models.nets' is not in the stock images" in result.stderr
    assert "modelpress images --with" in result.stderr and "kubernetes.image_tag" in result.stderr
    with_tag = workflow.read_text() + "kubernetes: {image_tag: 0.1.0-acme-models-1a2b3c4d}\n"
    workflow.write_text(with_tag)
    pipeline, _ = compiled(cli, workflow, tmp_path)
    images = {e["container"]["image"] for e in pipeline["deploymentSpec"]["executors"].values()}
    assert image_for("tf", tag="0.1.0-acme-models-1a2b3c4d", gpu=True) in images
    assert all("0.1.0-acme-models-1a2b3c4d" in image for image in images)


def start_kfp_local(root: Path, caching: bool = False) -> Path:
    """kfp.local running components as subprocesses of this interpreter's environment (caching: KFP's local cache)."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=caching)
    return root


@pytest.fixture
def kfp_local(tmp_path):
    return start_kfp_local(tmp_path / "pipeline_root")


def executor_outputs(root: Path, task: str) -> list[dict]:
    """The executor outputs of a task (a glob under the run: a fan-out's tasks sit in for-loop-N-iteration-I/)."""
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{task}/executor_output.json"))]


def test_kfp_local_runs_tiny_workflow_to_s3_and_serving(kfp_local, s3, adapter_workflow, tmp_path):
    workflow = adapter_workflow(extra=f"push: {{uri: s3://{s3}/registry}}\nserving: {{base_path: s3://{s3}/serving}}\n")
    build_pipeline(load_workflow(workflow))()  # raises when any task fails

    client = boto3.client("s3")
    manifest = json.loads(client.get_object(Bucket=s3, Key="registry/tiny/1/manifest.json")["Body"].read())
    assert sorted(a["name"] for a in manifest["artifacts"]) == ["tflite_fp32", "train"]  # TensorRT skipped: no GPU
    client.head_object(Bucket=s3, Key="serving/tiny/1/saved_model.pb")

    (validation,) = executor_outputs(kfp_local, "validate")
    assert validation["parameterValues"] == {"Output": True}
    outputs = validation["artifacts"]
    assert outputs["metrics"]["artifacts"][0]["metadata"]["accuracy"] > 0.6
    matrix = outputs["confusion_matrix"]["artifacts"][0]["metadata"]["confusionMatrix"]
    assert len(matrix["rows"]) == 10 and sum(sum(r["row"]) for r in matrix["rows"]) == 359  # the digits test split
    report = Path(outputs["report"]["artifacts"][0]["uri"]).read_text()
    assert "<table>" in report and "train" in report
    (tflite,) = [o["artifacts"]["metrics"]["artifacts"][0]["metadata"] for o in executor_outputs(kfp_local, "for-loop-*/validate-2")]
    assert tflite["accuracy"] > 0.6
    # TensorRT fans out on its own (validate-3: the third validate task KFP names); its convert skipped, so its
    # validation did
    (tensorrt,) = [o["artifacts"]["metrics"]["artifacts"][0]["metadata"] for o in executor_outputs(kfp_local, "for-loop-*/validate-3")]
    assert tensorrt == {"skipped": "its input 'model' was skipped"}

    # The UI shows what each artifact is, how it scored and where it came from (artifact.json, blessing.json).
    (train,) = executor_outputs(kfp_local, "train")
    model = train["artifacts"]["output_model"]["artifacts"][0]
    trained = json.loads((Path(model["uri"]) / "artifact.json").read_text())
    assert model["metadata"]["format"] == trained["format"] == "saved_model" and model["metadata"]["data_hash"] == trained["data_hash"]
    assert model["metadata"]["accuracy"] == trained["metrics"]["accuracy"] and model["metadata"]["size_bytes"] > 0
    assert "parent" not in model["metadata"]  # trained from data, not from another artifact
    blessed = outputs["output_validation"]["artifacts"][0]["metadata"]
    assert blessed["digest"] == model["metadata"]["digest"] and blessed["parent"] == model["uri"]
    assert blessed["blessed"] is True and blessed["accuracy"] > 0.6 and blessed["data_hash"] == trained["data_hash"]
    assert blessed["latency_ms_p50"] > 0 and blessed["size_bytes"] == model["metadata"]["size_bytes"]
    (converted,) = [o["artifacts"]["output_model"]["artifacts"][0]["metadata"] for o in executor_outputs(kfp_local, "for-loop-*/convert")]
    assert converted["format"] == "tflite_fp32" and converted["parent"] == model["uri"]
    (push,) = executor_outputs(kfp_local, "push")
    release = {"model": "tiny", "version": 1, "registry": f"s3://{s3}/registry", "uri": f"s3://{s3}/registry/tiny/1"}
    assert push["artifacts"]["output_release"]["artifacts"][0]["metadata"] == {"release": release, "digest": manifest["digest"]}
    published = push["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert published["version"] == 1 and published["artifacts"] == 2 and published["digest"] == manifest["digest"]

    # The run's report: every validated artifact with its accuracy, as `modelpress run` writes it.
    (report,) = executor_outputs(kfp_local, "report")
    summary_artifact = report["artifacts"]["summary"]["artifacts"][0]
    summary = json.loads((Path(summary_artifact["uri"]) / "summary.json").read_text())
    accuracies = {row["name"]: row["metrics"]["accuracy"] for row in summary["artifacts"]}
    assert set(accuracies) == {"train", "tflite_fp32"} and min(accuracies.values()) > 0.6
    assert accuracies["train"] == outputs["metrics"]["artifacts"][0]["metadata"]["accuracy"]
    assert sorted(summary["blessed"]) == ["tflite_fp32", "train"] and summary_artifact["metadata"]["blessed"] == summary["blessed"]
    assert [(s["name"], s["reason"]) for s in summary["skipped"]] == [("tensorrt_fp16", "its input 'model' was skipped")]
    page = Path(report["artifacts"]["report"]["artifacts"][0]["uri"]).read_text()
    card = Path(report["artifacts"]["model_card"]["artifacts"][0]["uri"]).read_text()
    for name, accuracy in accuracies.items():
        assert f"<td>{name}</td>" in page and f"<td>{accuracy:.4f}</td>" in page
        assert f"| {name} |" in card and f" {accuracy:.4f} " in card


def test_kfp_local_gate_parameter_stops_push_and_deploy(kfp_local, s3, adapter_workflow, tmp_path):
    """A gate set in the UI (pipeline parameter) that the model misses: validation says no, nothing is published."""
    registry, serving = f"s3://{s3}/registry", f"s3://{s3}/serving"
    workflow = adapter_workflow(targets="[saved_model]", extra=f"push: {{uri: {registry}}}\nserving: {{base_path: {serving}}}\n")
    build_pipeline(load_workflow(workflow))(min_accuracy=0.999)

    (validation,) = executor_outputs(kfp_local, "validate")
    assert validation["parameterValues"] == {"Output": False}
    blessing = json.loads(next(kfp_local.glob("*/validate/output_validation/blessing.json")).read_text())
    assert blessing["thresholds"]["min_accuracy"] == 0.999 and "below min_accuracy 0.9990" in blessing["reasons"][0]
    assert not executor_outputs(kfp_local, "*deploy")  # dsl.If on the blessing
    (push,) = executor_outputs(kfp_local, "push")
    skipped = push["artifacts"]["metrics"]["artifacts"][0]["metadata"]["skipped"]
    assert skipped.startswith("no validation it reads blessed its model; nothing to publish (train: accuracy ")
    assert boto3.client("s3").list_objects_v2(Bucket=s3).get("KeyCount") == 0  # no release, no serving files


def test_every_cached_task_is_keyed_on_the_runs_data_digest(cli, adapter_workflow, tmp_path):
    workflow = adapter_workflow(extra="push: {uri: s3://models/registry}\n")
    workflow.write_text(workflow.read_text().replace("source: digits", "{source: csv, path: 's3://models/rows.csv'}"))
    pipeline, platform = compiled(cli, workflow, tmp_path)
    root = pipeline["root"]["dag"]["tasks"]
    assert root["data-digest"]["cachingOptions"] == {}  # runs every time: it is what sees new data
    assert root["data-digest"]["inputs"]["parameters"]["data_uri"] == {"componentInputParameter": "data_uri"}
    assert platform["exec-data-digest"]["secretAsEnv"][0]["secretName"] == "modelpress-s3"
    tasks = all_dag_tasks(pipeline)
    cached = {name for name, task in tasks.items() if task["cachingOptions"].get("enableCache")}
    assert cached >= {"train", "validate_train", "convert_tf", "validate_convert_tf"} and "push" not in cached
    for name in cached:
        (digest,) = [v for k, v in tasks[name]["inputs"]["parameters"].items() if k == "data_digest"]
        assert digest in ({"taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "data-digest"}},
                          {"componentInputParameter": "pipelinechannel--data-digest-Output"}), name  # fmt: skip


def write_rows(path: Path, rows: list[list[float]]) -> None:
    path.write_text("a,b,label\n" + "".join(f"{x},{y},{label}\n" for x, y, label in rows))


def test_kfp_local_cache_keys_see_the_data_a_run_reads(adapter_workflow, tmp_path):
    """Unchanged data: the second run's train is a cache hit. One changed row at the same data.path: train runs
    again, on the new data."""
    root = start_kfp_local(tmp_path / "pipeline_root", caching=True)
    rows = [[i % 3 + 0.1 * (i % 7), (i % 3) * 2 - 0.05 * (i % 5), i % 3] for i in range(90)]
    data = tmp_path / "rows.csv"
    write_rows(data, rows)
    workflow = adapter_workflow(targets="[saved_model]")
    spec = yaml.safe_load(workflow.read_text())
    spec["data"] = {"source": "csv", "path": str(data)}
    spec["model"]["params"] = {"hidden": [8]}
    workflow.write_text(yaml.safe_dump(spec))

    def run() -> list[str]:
        """Runs the pipeline; the data hashes of every train that executed so far, oldest first."""
        build_pipeline(load_workflow(workflow))()
        trained = sorted(root.glob("*/train/output_model/artifact.json"), key=lambda p: p.stat().st_mtime_ns)
        metas = [json.loads(p.read_text()) for p in trained]
        digests = [o["parameterValues"]["Output"] for o in executor_outputs(root, "data-digest")]
        assert metas[-1]["details"]["data_digest"] == digests[-1]  # the key is in the lineage too
        return [meta["data_hash"] for meta in metas]

    assert len(run()) == 1
    assert len(run()) == 1  # same data: train (and validate) came from the cache
    assert len(executor_outputs(root, "validate")) == 1
    assert len(executor_outputs(root, "data-digest")) == 2  # never cached: it is what sees the data
    rows[40][0] += 1.0
    write_rows(data, rows)
    first, again = run()
    assert again != first
    assert len(executor_outputs(root, "validate")) == 2


def test_ui_parameters_cover_data_epochs_compression_gates_and_push(cli, tmp_path):
    workflow = tmp_path / "knobs.yaml"
    workflow.write_text(
        "name: knobs\nmodel: {zoo: mlp}\ndata: {source: csv, path: s3://drops/table.csv, label_column: label}\n"
        "train: {epochs: 7}\ncompress: [{technique: prune, sparsity: 0.7}, {technique: cluster, clusters: 8}]\n"
        "gates: {min_accuracy: 0.9, max_drop: 0.02}\npush: {uri: s3://models/registry}\n"
    )
    pipeline, _ = compiled(cli, workflow, tmp_path)
    assert parameter_defaults(pipeline) == {
        "data_uri": "s3://drops/table.csv", "epochs": 7, "batch_size": 32, "sparsity": 0.7, "clusters": 8,
        "min_accuracy": 0.9, "max_drop": 0.02, "push_uri": "s3://models/registry",
    }  # fmt: skip
    # The UI explains each parameter with its spec field's description.
    descriptions = {name: p.get("description") for name, p in pipeline["root"]["inputDefinitions"]["parameters"].items()}
    assert descriptions == {
        "data_uri": "local path or s3://bucket/key", "epochs": "passes over the training split",
        "batch_size": "examples per gradient step",
        "sparsity": "magnitude, lottery: share of each layer's kernel set to zero, in [0, 1)",
        "clusters": "k: each clustered kernel keeps at most k distinct values", "min_accuracy": "lowest test accuracy allowed",
        "max_drop": "accuracy drop allowed vs the trained (uncompressed) model",
        "push_uri": "s3://bucket/prefix or a local folder; default <run>/registry",
    }  # fmt: skip
    tasks = all_dag_tasks(pipeline)
    assert set(tasks["prune"]["inputs"]["parameters"]) == {"config", "data_uri", "epochs", "batch_size", "sparsity", "data_digest"}
    assert "sparsity" not in tasks["cluster"]["inputs"]["parameters"]  # each task gets only its own knobs


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://runs/p/train/output_model", "s3://runs/p/train/output_model"),
        ("minio://mlpipeline/v2/artifacts/p/train/output_model", "s3://mlpipeline/v2/artifacts/p/train/output_model"),
        ("/tmp/kfp-root/p/train/output_model", "/tmp/kfp-root/p/train/output_model"),  # kfp.local: a shared folder
    ],
)
def test_steps_name_pipeline_root_uris_never_a_pods_local_copy(uri, expected):
    from kfp.dsl import Artifact

    from modelpress.kfp.components import artifact_address

    assert artifact_address(Artifact(uri=uri)) == expected


def test_a_pipeline_root_the_steps_cannot_open_is_one_line():
    from kfp.dsl import Artifact

    from modelpress.kfp.components import artifact_address

    with pytest.raises(SystemExit, match=r"gs:// storage, which ModelPress steps cannot open; run the pipeline with an s3:// or minio:// pipeline root"):
        artifact_address(Artifact(uri="gs://bucket/p/train/output_model"))


def test_compiling_for_airflow_where_it_is_not_installed_says_where_it_goes(cli, tmp_path):
    """kfp and the current Airflow provider cannot share an environment: this one (kfp's) has no Airflow."""
    result = cli("compile", "airflow", str(ROOT / "examples" / "digits_mlp.yaml"), "-o", str(tmp_path / "dags"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "install it in a venv of its own: pip install -c constraints-airflow.txt 'modelpress[airflow]'" in result.stderr
    assert not (tmp_path / "dags").exists()


def test_each_task_asks_for_its_steps_cpu_memory_and_time_and_only_publishing_is_retried(cli, adapter_workflow, tmp_path):
    workflow = adapter_workflow(
        targets="[saved_model]",
        extra="push: {uri: s3://models/registry}\n"
        "kubernetes: {resources: {train: {cpu: '6', cpu_limit: '8', memory_limit: 20Gi, timeout_minutes: 90}}}\n",
    )
    pipeline, platform = compiled(cli, workflow, tmp_path)
    tasks = all_dag_tasks(pipeline)
    executors = {name: pipeline["components"][task["componentRef"]["name"]]["executorLabel"] for name, task in tasks.items()}

    def resources(name: str) -> dict:
        found = pipeline["deploymentSpec"]["executors"][executors[name]]["container"]["resources"]
        return {key: value for key, value in found.items() if key.startswith("resource") and key != "resourceCount"} | (
            {"gpu": found["accelerator"]["resourceCount"]} if "accelerator" in found else {}
        )

    # train: the workflow's values over the step's defaults (memory 8Gi); validate and push: their steps' defaults
    assert resources("train") == {
        "resourceCpuRequest": "6", "resourceCpuLimit": "8", "resourceMemoryRequest": "8Gi", "resourceMemoryLimit": "20Gi", "gpu": "1",
    }  # fmt: skip
    assert resources("validate_train") == {"resourceCpuRequest": "2", "resourceCpuLimit": "4", "resourceMemoryRequest": "4Gi", "resourceMemoryLimit": "8Gi"}
    assert resources("push") == {"resourceCpuRequest": "500m", "resourceCpuLimit": "1", "resourceMemoryRequest": "1Gi", "resourceMemoryLimit": "2Gi"}
    deadlines = {name: platform[executors[name]]["activeDeadlineSeconds"] for name in tasks}
    # the pod's activeDeadlineSeconds; the run's report reads validations with validate's time
    assert deadlines == {"train": "5400", "validate_train": "3600", "push": "1800", "report": "3600"}
    for name in tasks:  # a missing Secret stops the pod at start ("secret not found"), not late as "no credentials"
        (secret,) = platform[executors[name]]["secretAsEnv"]
        assert (secret["secretName"], secret["optional"]) == ("modelpress-s3", False)
    # KFP retries any failure, a user error too: only push, whose failures are mostly S3's, is retried.
    assert tasks["push"]["retryPolicy"] == {"maxRetryCount": 2, "backoffDuration": "30s", "backoffFactor": 2.0, "backoffMaxDuration": "600s"}
    assert "retryPolicy" not in tasks["train"] and "retryPolicy" not in tasks["validate_train"]
