"""containers/: static checks of the Dockerfiles (no Docker engine here, so the images are never built in tests).

Each dependency set in registry.DEPENDENCY_SETS has containers/<set>/Dockerfile: base images pinned, the set's
extras installed with the repository's constraints, nothing from the build stage's toolchain in a final stage,
a non-root user, `modelpress` as the entrypoint, OCI labels with the package version.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelpress import __version__
from modelpress._core.registry import DEPENDENCY_SETS, image_for
from tests.conftest import ROOT

CONTAINERS = ROOT / "containers"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make ", "cmake", "-dev ")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(str.strip, text.splitlines()):
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], words[0])
            stages.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            arguments[name] = default
        elif stages:
            stages[-1].instructions.append((instruction, rest))
    return arguments, stages


def final_stages(stages: list[Stage]) -> list[Stage]:
    """Stages no other stage builds on or copies from: the images that ship."""
    used = {s.base for s in stages}
    for stage in stages:
        used |= {m for arguments in stage.all("COPY") for m in re.findall(r"--from=(\S+)", arguments)}
    return [s for s in stages if s.name not in used]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.strip())
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])


@pytest.fixture(params=sorted(DEPENDENCY_SETS))
def dockerfile(request) -> tuple[str, Path]:
    return request.param, CONTAINERS / request.param / "Dockerfile"


def test_every_dependency_set_has_a_dockerfile_and_nothing_else_does():
    assert sorted(p.parent.name for p in CONTAINERS.glob("*/Dockerfile")) == sorted(DEPENDENCY_SETS)


def test_base_images_are_pinned_to_an_exact_version_or_digest(dockerfile):
    _, path = dockerfile
    _, stages = parse(path)
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue
        pinned = re.search(r"@sha256:[0-9a-f]{64}$", stage.base) or re.search(r":\d+\.\d+\.\d+[\w.-]*$", stage.base)
        assert pinned, f"{path}: FROM {stage.base} is not pinned to an x.y.z tag or a digest"
    python = next(s.base for s in stages if s.base.startswith("python:"))
    assert python.startswith("python:3.11."), "the images' Python must satisfy requires-python (3.11)"


def test_the_sets_extras_are_installed_under_the_constraints(dockerfile):
    name, path = dockerfile
    _, stages = parse(path)
    installs = [a for s in stages for a in s.all("RUN") if "pip install" in a]
    assert len(installs) == 1, f"{path}: one pip install expected, found {len(installs)}"
    words = shlex.split(installs[0].split("&&")[0])
    extras = next(re.fullmatch(r"\.\[(.*)\]", w).group(1) for w in words if w.startswith(".["))
    assert tuple(extras.split(",")) == DEPENDENCY_SETS[name]
    constraint_files = [words[i + 1] for i, w in enumerate(words) if w == "-c"]
    assert "constraints.txt" in constraint_files
    # Every requirement of those extras (and kfp, the executor) has an exact pin in a constraints file.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {requirement_name(r) for extra in DEPENDENCY_SETS[name] for r in project["optional-dependencies"][extra]}
    required |= {requirement_name(r) for r in project["dependencies"]} | {"kfp"}
    pinned = pins(ROOT / "constraints.txt")
    for copied in (s for stage in stages for s in stage.all("COPY")):
        source, target = copied.split()[-2:]
        if Path(target).name in constraint_files and source != "constraints.txt":
            pinned |= pins(ROOT / source)
    assert required - pinned.keys() == set(), f"{path}: no pin for {sorted(required - pinned.keys())}"


def test_copy_sources_exist_and_the_build_context_sends_them(dockerfile):
    _, path = dockerfile
    _, stages = parse(path)
    ignore = (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore  # an allowlist: the repository's .venv and runs/ never enter the context
    copies = [c for stage in stages for c in stage.all("COPY") if "--from=" not in c]
    assert copies
    for copy in copies:
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), f"{path}: COPY source {source} does not exist"
            assert source in allowed, f"{path}: {source} is not in {path.name}.dockerignore's allowlist"


def test_final_images_run_modelpress_as_a_non_root_user_without_build_tools(dockerfile):
    name, path = dockerfile
    _, stages = parse(path)
    finals = final_stages(stages)
    assert finals and all(s.name != "build" for s in finals)
    for stage in finals:
        where = f"{path} stage {stage.name}"
        users = stage.all("USER")
        assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), where
        assert stage.all("ENTRYPOINT") == ['["modelpress"]'], where
        labels = " ".join(stage.all("LABEL"))
        assert 'org.opencontainers.image.version="${VERSION}"' in labels and "org.opencontainers.image.source=" in labels, where
        assert f'io.modelpress.dependency-set="{name}"' in labels, where
        assert "VERSION" in stage.all("ARG"), where
        for command in stage.all("RUN"):
            assert not any(tool in command + " " for tool in BUILD_TOOLS), f"{where}: installs build tools: {command}"
            assert "pip install" not in command, where
        copied = [c for c in stage.all("COPY") if "--from=" in c]
        assert any("/opt/modelpress" in c for c in copied), f"{where}: the venv is copied from the build stage"
    build = next(s for s in stages if s.name == "build")
    assert any("build-essential" in c for c in build.all("RUN"))  # the toolchain stays in the build stage


def test_the_tf_set_has_a_gpu_stage_on_a_cuda_base():
    _, stages = parse(CONTAINERS / "tf" / "Dockerfile")
    gpu = next(s for s in final_stages(stages) if s.name == "gpu")
    assert gpu.base.startswith("nvidia/cuda:") and "cudnn-runtime" in gpu.base
    assert final_stages(stages)[-1].name == "cpu"  # a plain `docker build` gives the CPU image


def test_build_script_tags_each_image_with_the_registry_name_and_package_version(capsys):
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("build_images", CONTAINERS / "build.py")
    build = module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.main(["--dry-run"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    tags = {c[c.index("--tag") + 1] for c in commands}
    # Every image an adapter can name, CPU or GPU; the tf set's GPU steps get its CUDA build.
    assert tags == {image_for(s, gpu=gpu) for s in DEPENDENCY_SETS for gpu in (False, True)}
    assert image_for("tf", gpu=True) == image_for("tf") + "-gpu" and image_for("tf", gpu=True) in tags
    for command in commands:
        assert command[:2] == ["docker", "build"] and command[-1] == str(ROOT)
        assert command[command.index("--build-arg") + 1] == f"VERSION={__version__}"
        assert Path(command[command.index("--file") + 1]).is_file()
    assert build.main(["tpu"]) == 2
    assert "unknown dependency set 'tpu'" in capsys.readouterr().err
