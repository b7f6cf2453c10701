"""Parity: every registered step appears in the Kubeflow pipeline and in the Airflow DAG with the same task name,
inputs (and where they come from), output, image, GPU request, node selector and tolerations; and bad workflows fail
the Airflow compile clearly (tests/kfp/test_compiler_parity.py: the Kubeflow one). This runs in .venv-airflow; the
pipelines are compiled by `modelpress compile kfp` in the main environment (kfp cannot be installed here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from modelpress.airflow.dag_factory import WORKFLOWS_ENV, build_dag, workflow_dags
from modelpress.airflow.operators import MODE_ENV
from modelpress.contract.images import image_for
from modelpress.execution.plan import load_workflow
from modelpress.execution.runner import KIND_FOLDERS
from modelpress.steps.catalog import STEPS
from tests.adapter_cases import (
    BAD_WORKFLOWS,
    NO_IMAGE_CARRIES,
    WORKFLOWS,
    assert_bad_workflow_fails_compile_with_one_line,
    assert_credentials_are_refused_and_never_echoed,
)
from tests.conftest import step_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Every parity workflow and its pipeline, compiled in one `modelpress compile kfp` of the main environment."""
    folder = tmp_path_factory.mktemp("parity")
    for name, text in WORKFLOWS.items():
        (folder / f"{name}.yaml").write_text(text)
    workflows = [folder / f"{name}.yaml" for name in WORKFLOWS]
    result = step_cli("compile", "kfp", *map(str, workflows), "-o", str(folder / "compiled"))
    assert result.returncode == 0, result.stderr
    return {path.stem: (path, folder / "compiled" / path.name) for path in workflows}


def task_name(task: dict) -> str:
    """A KFP task's name in both orchestrators: a fan-out's display name also lists its targets, "convert_tf (onnx)"."""
    return task["taskInfo"]["name"].split(" (")[0]


def kfp_tasks(pipeline_path: Path) -> dict[str, dict]:
    """Each step task of a compiled pipeline: display name -> step, inputs (name, producer), output, image, GPU,
    node selector, tolerations."""
    ir, platform = yaml.safe_load_all(pipeline_path.read_text())
    components, executors = ir["components"], ir["deploymentSpec"]["executors"]
    placements = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    found: dict[str, dict] = {}

    def producers(source: dict, dag: dict, outer: dict[str, list[str]]) -> list[str]:
        """Display names of the step tasks an artifact input reads, through If/ParallelFor sub-DAG boundaries."""
        if "componentInputArtifact" in source:
            return outer[source["componentInputArtifact"]]
        key, output = source["taskOutputArtifact"]["producerTask"], source["taskOutputArtifact"]["outputArtifactKey"]
        task = dag["tasks"][key]
        component = components[task["componentRef"]["name"]]
        if "executorLabel" in component:
            return [task_name(task)]
        inner = component["dag"]
        selectors = inner["outputs"]["artifacts"][output]["artifactSelectors"]
        return [task_name(inner["tasks"][s["producerSubtask"]]) for s in selectors]

    def walk(dag: dict, outer: dict[str, list[str]]) -> None:
        for task in dag["tasks"].values():
            component = components[task["componentRef"]["name"]]
            sources = {name: producers(s, dag, outer) for name, s in task.get("inputs", {}).get("artifacts", {}).items()}
            if "dag" in component:
                walk(component["dag"], sources)
                continue
            if task["taskInfo"]["name"] == "data_digest":  # KFP's cache key (kfp/data_digest.py); Airflow caches nothing
                continue
            container = executors[component["executorLabel"]]["container"]
            placement = placements[component["executorLabel"]]
            step = container["args"][container["args"].index("--function_to_execute") + 1]
            if step == "report":  # the run's report, not a step: compared below
                continue
            list_inputs = STEPS[step].list_inputs
            outputs = [n for n in component["outputDefinitions"]["artifacts"] if n.startswith("output_")]
            found[task_name(task)] = {
                "step": step,
                "inputs": {  # a list input arrives as name_<fan-out> (its collected outputs) and name_<n>
                    (next((listed for listed in list_inputs if name.startswith(f"{listed}_")), name), producer)
                    for name, names in sources.items()
                    for producer in names
                },
                "output": outputs[0].removeprefix("output_"),
                "image": container["image"],
                "gpu": container.get("resources", {}).get("accelerator", {}).get("resourceCount"),
                "requests": {k: container["resources"][f"resource{k.title()}Request"] for k in ("cpu", "memory") if f"resource{k.title()}Request" in container.get("resources", {})},
                "limits": {k: container["resources"][f"resource{k.title()}Limit"] for k in ("cpu", "memory") if f"resource{k.title()}Limit" in container.get("resources", {})},
                "timeout_seconds": int(placement["activeDeadlineSeconds"]) if "activeDeadlineSeconds" in placement else None,
                "node_selector": placement.get("nodeSelector", {}).get("labels", {}),
                "tolerations": placement.get("tolerations", []),
            }

    walk(ir["root"]["dag"], {})
    return found


def airflow_tasks(dag) -> dict[str, dict]:
    """Each step task of a DAG (the blessing gates are not steps): the same fields, from the pod arguments."""
    folders = {folder: kind for kind, folder in KIND_FOLDERS.items()}
    steps = [task for task in dag.tasks if task.task_type != "ShortCircuitOperator" and task.task_id != "report"]

    def argument_lists_of(task) -> list[list[str]]:
        """One argument list, or in the targets' mapped task group one per target (from the group's expansion)."""
        if isinstance(task.arguments, list):
            return [task.arguments]
        return [item[task.arguments._key] for item in task.arguments._input.value]  # MappedArgument internals

    argument_lists = {task.task_id: argument_lists_of(task) for task in steps}
    writers = {}  # output URI -> task name
    for name, lists in argument_lists.items():
        writers.update({arguments[arguments.index("--output") + 1]: name for arguments in lists})
    found = {}
    for task in steps:
        settings = vars(task)
        lists = argument_lists[task.task_id]
        output = lists[0][lists[0].index("--output") + 1].split("/")[-2]
        resources = settings.get("container_resources")
        found[task.task_id] = {
            "step": lists[0][1],
            "inputs": {
                (value.split("=", 1)[0], writers[value.split("=", 1)[1]])
                for arguments in lists
                for flag, value in zip(arguments, arguments[1:], strict=False)
                if flag == "--input"
            },
            "output": folders.get(output, output),
            "image": settings["image"],
            "gpu": resources.limits.get("nvidia.com/gpu") if resources else None,
            "requests": dict(resources.requests or {}) if resources else {},
            "limits": {k: v for k, v in (resources.limits or {}).items() if k in ("cpu", "memory")} if resources else {},
            "timeout_seconds": int(task.execution_timeout.total_seconds()) if task.execution_timeout else None,
            "node_selector": settings["node_selector"],
            "tolerations": [{k: v for k, v in t.to_dict().items() if v is not None} for t in settings.get("tolerations") or []],
        }
    return found


@pytest.fixture
def cluster_mode(monkeypatch, tmp_path):
    monkeypatch.delenv(MODE_ENV, raising=False)
    monkeypatch.setenv(WORKFLOWS_ENV, str(tmp_path / "workflows"))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_pipeline_and_dag_have_the_same_steps_inputs_outputs_images_gpus_resources_and_timeouts(name, pipelines, cluster_mode):
    workflow, pipeline = pipelines[name]
    dag = build_dag(load_workflow(workflow), name)
    in_kfp, in_airflow = kfp_tasks(pipeline), airflow_tasks(dag)
    assert in_kfp.keys() == in_airflow.keys()
    ir, _ = yaml.safe_load_all(pipeline.read_text())
    report = next(t for t in ir["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == "report")
    assert ("push" in report.get("dependentTasks", [])) == ("push" in dag.get_task("report").upstream_task_ids) == ("push" in in_kfp)
    for task in in_kfp:
        assert in_kfp[task] == in_airflow[task], task
    if name == "all_steps":
        covered = {t["step"] for _, compiled in pipelines.values() for t in kfp_tasks(compiled).values()}
        missing = set(STEPS) - covered
        assert not missing, f"registered steps {sorted(missing)} are in no parity workflow; add them to ALL_STEPS so parity covers them"
        assert in_kfp["train"]["gpu"] == "1" and in_kfp["push"]["gpu"] is None
        assert ("hyperparameters", "tune") in in_kfp["train"]["inputs"]
        assert in_kfp["push"]["inputs"] >= {("validations", "validate_convert_tf"), ("validations", "validate_distill")}
    gpu_steps = [t for t in in_kfp.values() if t["gpu"] and "tensorrt" not in t["image"]]
    assert all(t["image"].endswith("-gpu") for t in gpu_steps)  # a GPU step runs in TF's CUDA build, not the CPU one
    if name == "mixed_targets":
        for task in ("convert_tensorrt", "validate_convert_tensorrt"):
            assert (in_kfp[task]["image"], in_kfp[task]["gpu"]) == (image_for("tensorrt"), "1"), task
            assert in_kfp[task]["node_selector"] == {"modelpress.io/pool": "gpu"} and in_kfp[task]["tolerations"], task
        for image in ("tf", "openvino"):  # convert and validate of a target run in the image carrying its runtime
            for task in (f"convert_{image}", f"validate_convert_{image}"):
                assert (in_kfp[task]["image"], in_kfp[task]["gpu"]) == (image_for(image), None), task
        assert ("model", "convert_tensorrt") in in_kfp["validate_convert_tensorrt"]["inputs"]
        assert in_kfp["push"]["inputs"] == {
            ("validations", "validate_train"), ("validations", "validate_convert_tf"),
            ("validations", "validate_convert_openvino"), ("validations", "validate_convert_tensorrt"),
        }  # fmt: skip


@pytest.mark.parametrize("name", WORKFLOWS)
def test_dag_params_are_the_pipeline_parameters_with_their_defaults_and_descriptions(name, pipelines, cluster_mode):
    workflow, pipeline = pipelines[name]
    ir, _ = yaml.safe_load_all(pipeline.read_text())
    in_kfp = {
        key: (p["defaultValue"], p["description"]) for key, p in ir["root"]["inputDefinitions"]["parameters"].items()
    }
    params = build_dag(load_workflow(workflow), name).params
    in_airflow = {key: (params[key], params.get_param(key).description) for key in params if key != "run_root"}
    assert in_airflow == in_kfp and "epochs" in in_airflow


@pytest.mark.parametrize("problem", BAD_WORKFLOWS)
def test_bad_workflow_fails_compile_with_one_line(problem, capsys, tmp_path):
    assert_bad_workflow_fails_compile_with_one_line("airflow", problem, capsys, tmp_path)


def test_step_needing_what_no_image_carries_fails_the_dag_file(cluster_mode, monkeypatch, adapter_workflow):
    monkeypatch.setitem(STEPS, "validate", dataclasses.replace(STEPS["validate"], extras=("tf", "cuda")))
    dags = workflow_dags(adapter_workflow().parent)
    assert set(dags) == {"modelpress_invalid_workflows"} and NO_IMAGE_CARRIES in dags["modelpress_invalid_workflows"].description


def test_credentials_in_a_workflow_are_refused_and_never_echoed(capsys, tmp_path):
    assert_credentials_are_refused_and_never_echoed("airflow", capsys, tmp_path)
