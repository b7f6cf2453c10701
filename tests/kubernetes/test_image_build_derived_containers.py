"""A team's own model code in the images: `modelpress images --with PACKAGE` derives images that carry it, the
compiled pipeline names them through kubernetes.image_tag, and train builds the team's model inside one."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from modelpress.contract.images import image_for
from modelpress.kubernetes.image_build import derived_tag
from tests.conftest import run_cli
from tests.container_fixtures import docker_run

pytestmark = [pytest.mark.containers, pytest.mark.xdist_group("containers")]  # one engine: container runs never compete

PACKAGE_FILES = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
    '[project]\nname = "acme-models"\nversion = "1.0"\n\n[tool.setuptools]\npackages = ["acme_models"]\n',
    "acme_models/__init__.py": "",
    "acme_models/nets.py": (
        "import tf_keras as keras\n\n\n"
        "def build(input_shape, num_classes):\n"
        "    inputs = keras.Input(input_shape, name='input')\n"
        "    x = keras.layers.Dense(24, activation='relu', name='acme_hidden')(keras.layers.Flatten()(inputs))\n"
        "    return keras.Model(inputs, keras.layers.Dense(num_classes, activation='softmax', name='acme_out')(x))\n"
    ),
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("acme-models")
    for name, text in PACKAGE_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_derived_images_carry_the_builder_and_the_pipeline_runs_in_them(docker, images, package, tmp_path, shared_dir):
    built = run_cli("images", "tf", "base", "--with", str(package), env={"PATH": f"/usr/bin:{os.environ['PATH']}"})
    assert built.returncode == 0, built.stderr[-3000:]
    tag = derived_tag(str(package))
    assert f"set kubernetes.image_tag: {tag}" in built.stdout
    derived = image_for("tf", tag=tag)
    labels = json.loads(subprocess.run([docker, "image", "inspect", derived], capture_output=True, text=True, check=True).stdout)[0]
    assert labels["Config"]["Labels"]["io.modelpress.builder-package"] == "acme-models" and labels["Config"]["User"] == "10001"

    # The workflow names the builder; compiled with the derived tag, every task runs in an image that has it.
    workflow = tmp_path / "acme.yaml"
    spec = {"name": "acme", "model": {"builder": "acme_models.nets:build"}, "data": {"source": "digits"},
            "train": {"epochs": 1}, "targets": ["saved_model"], "kubernetes": {"image_tag": tag}}  # fmt: skip
    workflow.write_text(yaml.safe_dump(spec))
    compiled = run_cli("compile", "kfp", str(workflow), "-o", str(tmp_path / "acme.pipeline.yaml"))
    assert compiled.returncode == 0, compiled.stderr
    pipeline = next(yaml.safe_load_all((tmp_path / "acme.pipeline.yaml").read_text()))
    tasks = {e["container"]["image"] for e in pipeline["deploymentSpec"]["executors"].values()}
    # train on the GPU build, validate and the report in tf, the data digest in base: all the derived images
    assert tasks == {image_for("tf", tag=tag, gpu=True), image_for("tf", tag=tag), image_for("base", tag=tag)}

    config = json.dumps({k: spec[k] for k in ("model", "data", "train")})
    trained = docker_run(docker, derived, ["step", "train", "--config", config, "--output", "/out/train"], volumes={str(shared_dir): "/out"})
    assert trained.returncode == 0, trained.stderr[-3000:]
    meta = json.loads((shared_dir / "train" / "artifact.json").read_text())
    assert meta["metrics"]["accuracy"] > 0.3 and "acme_hidden" in (shared_dir / "train" / "model.h5").read_bytes().decode("latin-1")
    stock = docker_run(docker, images["tf"], ["step", "train", "--config", config, "--output", "/out/stock"], volumes={str(shared_dir): "/out"})
    assert stock.returncode == 2 and "cannot import module 'acme_models.nets'" in stock.stderr  # the stock image lacks it
