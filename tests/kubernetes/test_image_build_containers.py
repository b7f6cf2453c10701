"""Placement that cannot lie: every library a task needs imports inside the image the adapters place it in, for
every step and every target format, run as the pods run (uid 10001, read-only root, no network)."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

import pytest

from modelpress import __version__
from modelpress.contract.formats import FORMATS
from modelpress.contract.images import EXTRA_MODULES, image_for
from modelpress.execution.plan import Task, placement
from modelpress.steps.catalog import STEPS
from tests.container_fixtures import CPU_SETS, docker_run

pytestmark = [pytest.mark.containers, pytest.mark.xdist_group("containers")]  # one engine: container runs never compete


def needs_by_image() -> dict[str, dict[str, set[str]]]:
    """Image -> what runs in it ("step" or "step/format") -> the modules its extras promise."""
    found: dict[str, dict[str, set[str]]] = defaultdict(dict)
    tasks = [Task(name, name, None) for name in STEPS]
    tasks += [Task(f"{step}_{f}", step, None, target=f) for f in FORMATS for step in ("convert", "validate")]
    for task in tasks:
        where = placement(task)
        modules = {m for extra in (*STEPS[task.step].extras, *(FORMATS[task.target].extras if task.target else ())) for m in EXTRA_MODULES[extra]}
        found[where.dependency_set][f"{task.step}/{task.target}" if task.target else task.step] = modules
    return found


@pytest.mark.parametrize("dependency_set", CPU_SETS)
def test_every_task_placed_on_an_image_imports_what_it_needs_there(docker, images, dependency_set):
    placed = needs_by_image()[dependency_set]
    assert placed, f"nothing runs in {dependency_set}"
    modules = sorted(set().union(*placed.values()))
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('imported', len(sys.argv) - 1)"
    result = docker_run(docker, images[dependency_set], ["-c", probe, *modules], entrypoint="python", env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, f"{dependency_set} lacks a library of {sorted(placed)}: {result.stderr[-2000:]}"
    assert result.stdout.strip().splitlines()[-1] == f"imported {len(modules)}"


def test_the_placements_cover_every_step_and_format_and_only_built_images():
    placed = needs_by_image()
    assert set(placed) <= {*CPU_SETS, "tensorrt"}
    everything = {what for tasks in placed.values() for what in tasks}
    assert set(STEPS) <= everything and {f"convert/{f}" for f in FORMATS} <= everything
    assert "convert/onnx" in placed["tf"] and "validate/openvino_int8" in placed["openvino"]  # the two placements that lied


@pytest.mark.parametrize("dependency_set", CPU_SETS)
def test_images_run_modelpress_as_uid_10001_with_their_labels(docker, images, dependency_set):
    inspected = json.loads(subprocess.run([docker, "image", "inspect", images[dependency_set]], capture_output=True, text=True, check=True).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001" and config["Entrypoint"] == ["modelpress"]
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    assert config["Labels"]["io.modelpress.dependency-set"] == dependency_set
    result = docker_run(docker, images[dependency_set], ["--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"modelpress {__version__}"
    assert image_for(dependency_set) == images[dependency_set]


@pytest.mark.parametrize("image_set", ["base", "tf", "openvino", "airflow"])
def test_pip_check_is_clean_in_every_image(docker, images, image_set):
    result = docker_run(docker, images[image_set], ["-m", "pip", "check"], entrypoint="python")
    assert result.returncode == 0 and result.stdout.strip() == "No broken requirements found.", result.stdout + result.stderr


def test_the_airflow_image_carries_the_adapter_on_the_current_provider(docker, images):
    """Airflow's scheduler and workers: the adapter and the current Kubernetes provider, without kfp (which pins an
    older Kubernetes client) and without TensorFlow."""
    probe = (
        "import importlib.metadata as m, importlib.util as u, modelpress.airflow.dag_factory, "
        "airflow.providers.cncf.kubernetes.operators.pod\n"
        "print(m.version('apache-airflow-providers-cncf-kubernetes'), m.version('kubernetes'), u.find_spec('kfp'), u.find_spec('tensorflow'))"
    )
    result = docker_run(docker, images["airflow"], ["-c", probe], entrypoint="python")
    assert result.returncode == 0, result.stderr[-2000:]
    provider, client, kfp, tensorflow = result.stdout.strip().splitlines()[-1].split()
    assert provider.startswith("10.") and int(provider.split(".")[1]) >= 25 and int(client.split(".")[0]) >= 36
    assert (kfp, tensorflow) == ("None", "None")
    version = docker_run(docker, images["airflow"], ["version"])  # the image's command is `airflow`
    assert version.returncode == 0 and version.stdout.strip().splitlines()[-1].startswith("3.3."), version.stderr[-2000:]
