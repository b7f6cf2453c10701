"""containers/: what can be checked without an engine. The container tests (marker containers) build the images and run them.

The one Dockerfile builds every dependency set: no frontend image to pull (no `# syntax=` line), its base image a
build argument with a pinned default, the dependency layers keyed on their requirements, a non-root user and
`modelpress` as the entrypoint; every requirement an image installs has an exact pin.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from modelpress import __version__
from modelpress.contract.images import (
    COMMON_EXTRAS,
    DEPENDENCY_SETS,
    GPU_EXTRA,
    ORCHESTRATOR_CONSTRAINTS,
    ORCHESTRATOR_SETS,
    SET_CONSTRAINTS,
    image_for,
)
from modelpress.kubernetes.image_build import main as build_images
from tests.conftest import ROOT

DOCKERFILE = ROOT / "containers" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in text.splitlines() if line.strip()]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.strip())
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_no_frontend_pull_and_the_base_image_is_a_pinned_build_argument():
    assert not DOCKERFILE.read_text().startswith("# syntax=")  # BuildKit would pull the frontend image named there
    steps = instructions(DOCKERFILE)
    (first,) = [a for i, a in steps if i == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", first)  # requires-python 3.11, exact tag
    assert steps[1] == ("FROM", "${PYTHON_IMAGE} AS python")


def test_the_image_runs_modelpress_as_uid_10001_with_its_labels():
    steps = instructions(DOCKERFILE)
    stages = [i for i, (name, _) in enumerate(steps) if name == "FROM"]
    start = steps.index(("FROM", "deps AS image"))
    final = steps[start : next((i for i in stages if i > start), len(steps))]  # the step images' stage
    assert ("USER", "10001") in final and ("ENTRYPOINT", '["modelpress"]') in final
    # The orchestrator image is that stage with `airflow` as its command (same user, labels and source).
    airflow = steps[steps.index(("FROM", "image AS airflow")) :]
    assert ("ENTRYPOINT", '["airflow"]') in airflow and not any(name == "USER" for name, _ in airflow)
    labels = " ".join(a for i, a in final if i == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels and 'io.modelpress.dependency-set="${SET}"' in labels
    # Dependencies come in layers before the source, so a source change rebuilds only the last layer.
    copies = [a for i, a in steps if i == "COPY"]
    assert copies.index("src ./src") > max(n for n, a in enumerate(copies) if "install.py" in a)


@pytest.mark.parametrize("dependency_set", sorted([*DEPENDENCY_SETS, *ORCHESTRATOR_SETS]))
def test_every_requirement_an_image_installs_has_an_exact_pin(dependency_set):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    orchestrator = dependency_set in ORCHESTRATOR_SETS
    extras = [*ORCHESTRATOR_SETS[dependency_set]] if orchestrator else [*DEPENDENCY_SETS[dependency_set], GPU_EXTRA]
    required = {normalize(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for e in extras for r in project["optional-dependencies"][e]}
    required |= {normalize(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in project["dependencies"]}
    required |= set() if orchestrator else {"kfp"}  # the executor KFP's components call, in every step image
    pinned = pins(ROOT / ORCHESTRATOR_CONSTRAINTS.get(dependency_set, "constraints.txt"))
    pinned |= pins(ROOT / SET_CONSTRAINTS[dependency_set]) if dependency_set in SET_CONSTRAINTS else {}
    assert required - pinned.keys() == set(), f"{dependency_set}: no pin for {sorted(required - pinned.keys())}"


def test_the_build_names_every_image_the_adapters_use_and_passes_requirements_as_arguments(capsys):
    assert build_images(["--dry-run", "--gpu"]) == 0
    commands = [shlex.split(line.removeprefix("+ ")) for line in capsys.readouterr().err.splitlines() if line.startswith("+ ")]
    tags = {c[c.index("--tag") + 1] for c in commands}
    assert tags == {image_for(s, gpu=gpu) for s in DEPENDENCY_SETS for gpu in (False, True)} | {image_for("airflow")}
    for command in commands:
        arguments = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg")
        assert arguments["VERSION"] == __version__ and command[command.index("--file") + 1] == str(DOCKERFILE)
        if arguments["SET"] in ORCHESTRATOR_SETS:  # its own constraints and common layer: no kfp, no TensorFlow
            assert command[command.index("--target") + 1] == "airflow" and arguments["CONSTRAINTS"] == "constraints-airflow.txt"
            assert not {"kfp", "tensorflow-serving-api==2.21.*"} & set(arguments["COMMON_REQUIREMENTS"].split())
            continue
        assert command[command.index("--target") + 1] == "image"
        assert "--network" in command  # pip reaches the index through the host's network (and its CA bundle secret)
        assert "kfp" in arguments["COMMON_REQUIREMENTS"].split() and "boto3>=1.34" in arguments["COMMON_REQUIREMENTS"].split()
        own = [e for e in DEPENDENCY_SETS[arguments["SET"]] if e not in COMMON_EXTRAS]
        assert ("tf2onnx>=1.16" in arguments["REQUIREMENTS"]) == ("onnx" in own)
        assert ("tensorflow[and-cuda]==2.21.*" in arguments["REQUIREMENTS"]) == command[command.index("--tag") + 1].endswith("-gpu")


def test_an_unknown_set_is_one_line(cli):
    result = cli("images", "tpu", "--dry-run")
    assert result.returncode == 2 and result.stderr.strip() == (
        "modelpress: error: unknown image set 'tpu'; choose from base, tf, openvino, tensorrt, airflow"
    )


def test_derived_images_extend_the_step_images_only(tmp_path, capsys):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "acme-models"\nversion = "1.0"\n')
    assert build_images(["--dry-run", "--with", str(tmp_path)]) == 0
    tags = [line.split("--tag ")[1].split()[0] for line in capsys.readouterr().err.splitlines() if line.startswith("+ ")]
    assert sorted(t.split("/")[-1].split(":")[0] for t in tags) == ["modelpress-base", "modelpress-openvino", "modelpress-tf"]
    assert all(t.split(":")[1].startswith(f"{__version__}-acme-models-") for t in tags)  # Airflow's image loads no model
