"""Build the container images: `modelpress images` (from a checkout: `make images`, `python containers/build.py`).

    modelpress images                       the CPU images: base, tf, openvino (the sets needing no GPU wheels),
                                            and airflow (the scheduler's and workers' image, with the adapter)
    modelpress images --gpu                 also tf's CUDA build (<version>-gpu) and tensorrt
    modelpress images tf openvino           some sets
    modelpress images --with ./my-models    derived images: the stock ones plus a team's builder package (a folder
                                            or a pip requirement), tagged <version>-<package>-<digest>; set that
                                            tag as kubernetes.image_tag in the workflow
    modelpress images --dry-run             print the docker commands only

Stock images build from containers/Dockerfile (one per dependency set, images.DEPENDENCY_SETS) and are tagged
`images.image_for(set)`, the names the Kubeflow and Airflow adapters put in their tasks. The Python base is the
public python image; where it cannot be pulled, containers/debian-base.sh makes one from Debian packages. pip's CA
bundle and index URL reach the build as BuildKit secrets, never stored in a layer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from modelpress import __version__
from modelpress.common.errors import UserError
from modelpress.contract.images import (
    COMMON_EXTRAS,
    DEPENDENCY_SETS,
    GPU_VARIANT_SETS,
    ORCHESTRATOR_CONSTRAINTS,
    ORCHESTRATOR_SETS,
    SET_CONSTRAINTS,
    extras_of,
    image_for,
)

PUBLIC_PYTHON_IMAGE = "python:3.11.13-slim-bookworm"
DEBIAN_PYTHON_IMAGE = "modelpress-os:bookworm"
GPU_ONLY_SETS = ("tensorrt",)
CHECKOUT_FILES = ("containers/Dockerfile", "containers/debian-base.sh", "pyproject.toml")


@dataclass
class ImageBuild:
    tag: str
    dependency_set: str
    context: Path
    arguments: dict[str, str] = field(default_factory=dict)
    dockerfile: Path | None = None  # None: the Dockerfile text comes on stdin
    dockerfile_text: str = ""
    target: str | None = None  # the Dockerfile stage to build

    def command(self, docker: str, secrets: dict[str, Path]) -> list[str]:
        command = [docker, "build", "--network", "host", "--tag", self.tag, "--file", str(self.dockerfile or "-")]
        command += ["--target", self.target] if self.target else []
        for name, value in self.arguments.items():
            command += ["--build-arg", f"{name}={value}"]
        for name, path in secrets.items():
            command += ["--secret", f"id={name},src={path}"]
        return [*command, str(self.context)]


def checkout_root() -> Path:
    """The ModelPress checkout the stock images build from (the source tree this package runs from)."""
    root = Path(__file__).resolve().parents[3]  # src/modelpress/kubernetes/ -> the checkout
    missing = [name for name in CHECKOUT_FILES if not (root / name).exists()]
    if missing:
        raise UserError(f"building the stock images needs a ModelPress checkout ({missing[0]} not found under {root}); run from a clone")
    return root


def requirements(root: Path, extras: list[str]) -> list[str]:
    """pyproject.toml's requirements of the extras, sorted and without spaces: one build argument."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return sorted({r.replace(" ", "") for extra in extras for r in project["optional-dependencies"][extra]})


def stock_builds(sets: list[str], gpu: bool, repository: str | None, python_image: str) -> list[ImageBuild]:
    root = checkout_root()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    core = {r.replace(" ", "") for r in project["dependencies"]}
    backend = project_build_requirements(root)  # what installs the source layer without the network
    builds = []
    for name in sets:
        for variant in ([False, True] if gpu and name in GPU_VARIANT_SETS else [False]):
            arguments = {"PYTHON_IMAGE": python_image, "SET": name, "VERSION": __version__}
            if name in ORCHESTRATOR_SETS:  # its own common layer and constraints, and `airflow ...` as the command
                common = sorted(core | set(requirements(root, list(ORCHESTRATOR_SETS[name])))) + backend
                arguments |= {"CONSTRAINTS": ORCHESTRATOR_CONSTRAINTS[name], "COMMON_REQUIREMENTS": " ".join(common), "REQUIREMENTS": ""}
                target = name
            else:  # the core, the common extras and kfp (the executor KFP's components call), then the set's own
                common = [*sorted(core | set(requirements(root, list(COMMON_EXTRAS)))), "kfp", *backend]
                extras = [e for e in extras_of(name, gpu=variant) if e not in COMMON_EXTRAS]
                arguments |= {"COMMON_REQUIREMENTS": " ".join(common), "REQUIREMENTS": " ".join(requirements(root, extras))}
                target = "image"
            if name in SET_CONSTRAINTS:
                arguments["SET_CONSTRAINTS"] = "constraints-" + Path(SET_CONSTRAINTS[name]).parent.name + ".txt"
            tag = image_for(name, repository=repository, gpu=variant)
            builds.append(ImageBuild(tag, name, root, arguments, dockerfile=root / "containers" / "Dockerfile", target=target))
    return builds


def project_build_requirements(root: Path) -> list[str]:
    return [r.replace(" ", "") for r in tomllib.loads((root / "pyproject.toml").read_text())["build-system"]["requires"]]


def package_digest(package: str) -> tuple[str, str, Path | None]:
    """(name, digest, folder) of a builder package: a folder with pyproject.toml/setup.py, or a pip requirement."""
    folder = Path(package)
    if folder.is_dir():
        if not any((folder / f).exists() for f in ("pyproject.toml", "setup.py", "setup.cfg")):
            raise UserError(f"--with {package}: the folder has no pyproject.toml or setup.py; make it an installable package")
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not {".git", "__pycache__"} & set(p.parts)):
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
        pyproject = folder / "pyproject.toml"
        declared = tomllib.loads(pyproject.read_text()).get("project", {}).get("name") if pyproject.is_file() else None
        return slug(declared or folder.resolve().name), digest.hexdigest()[:8], folder.resolve()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,]+\])?([<>=!~]=?[\w.*+!-]+)?", package):
        raise UserError(f"--with {package}: not a folder nor a pip requirement such as acme-models==1.2")
    name = re.split(r"[\[<>=!~]", package, maxsplit=1)[0]
    return slug(name), hashlib.sha256(package.encode()).hexdigest()[:8], None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "package"


def derived_tag(package: str) -> str:
    """The kubernetes.image_tag of the images that carry `package`."""
    name, digest, _ = package_digest(package)
    return f"{__version__}-{name}-{digest}"


def derived_builds(package: str, sets: list[str], gpu: bool, repository: str | None) -> list[ImageBuild]:
    name, _, folder = package_digest(package)
    tag = derived_tag(package)
    source = "/tmp/builder-package" if folder else package
    copy = "COPY . /tmp/builder-package\n" if folder else ""
    builds = []
    for dependency_set in sets:
        for variant in ([False, True] if gpu and dependency_set in GPU_VARIANT_SETS else [False]):
            parent = image_for(dependency_set, repository=repository, gpu=variant)
            text = (
                f"FROM {parent}\nUSER 0\n{copy}"
                "RUN --mount=type=secret,id=pip_cert --mount=type=secret,id=pip_index_url "
                "if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; "
                "if [ -f /run/secrets/pip_index_url ]; then export PIP_INDEX_URL=$(cat /run/secrets/pip_index_url); fi; "
                f"pip install {shlex.quote(source)} && rm -rf /tmp/builder-package\n"
                f'USER 10001\nLABEL io.modelpress.builder-package="{name}"\n'
            )
            context = folder or Path(tempfile.mkdtemp(prefix="modelpress-images-"))
            derived = image_for(dependency_set, repository=repository, gpu=variant, tag=tag)
            builds.append(ImageBuild(derived, dependency_set, context, dockerfile_text=text))
    return builds


def cpu_sets() -> list[str]:
    """What `make images` builds: every set but those needing GPU wheels."""
    return [s for s in [*DEPENDENCY_SETS, *ORCHESTRATOR_SETS] if s not in GPU_ONLY_SETS]


def docker_cli() -> str:
    """A docker client that builds with BuildKit: one with the buildx plugin, or one from before the buildx split
    (Debian's docker.io 20.10) whose classic `docker build` speaks BuildKit when DOCKER_BUILDKIT=1."""
    seen: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, "docker")
        if not os.access(candidate, os.X_OK) or os.path.realpath(candidate) in seen:
            continue
        seen.append(os.path.realpath(candidate))
        if subprocess.run([candidate, "buildx", "version"], capture_output=True).returncode == 0:
            return candidate
        version = subprocess.run([candidate, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        major = re.match(r"(\d+)", version.stdout.strip())
        if major and int(major.group(1)) < 23:
            return candidate
    raise UserError("no docker client that can build with BuildKit on PATH; install Docker with buildx, or Debian's docker.io")


def engine_running(docker: str) -> bool:
    return subprocess.run([docker, "info"], capture_output=True).returncode == 0


def python_base(docker: str, requested: str | None) -> str:
    """The Python base image: the one asked for, else the public image if present or pullable, else the Debian one
    (made here from Debian packages when absent)."""
    if requested:
        return requested
    for image in (PUBLIC_PYTHON_IMAGE, DEBIAN_PYTHON_IMAGE):
        if subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode == 0:
            return image
    try:
        pulled = subprocess.run([docker, "pull", PUBLIC_PYTHON_IMAGE], capture_output=True, timeout=300).returncode == 0
    except subprocess.TimeoutExpired:
        pulled = False
    if pulled:
        return PUBLIC_PYTHON_IMAGE
    print(f"{PUBLIC_PYTHON_IMAGE} cannot be pulled here; making {DEBIAN_PYTHON_IMAGE} from Debian packages", file=sys.stderr)
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise UserError(
            f"cannot pull {PUBLIC_PYTHON_IMAGE} and cannot make a Debian base here (needs root and debootstrap); "
            "pass --python-image with a Python 3.11 image you can reach"
        )
    script = checkout_root() / "containers" / "debian-base.sh"
    subprocess.run(["sh", str(script), DEBIAN_PYTHON_IMAGE], check=True, env={**os.environ, "DOCKER": docker})
    return DEBIAN_PYTHON_IMAGE


def pip_secrets(scratch: Path) -> dict[str, Path]:
    """This machine's pip CA bundle and index URL (environment or pip config), as files for `--secret`."""

    def pip_setting(variable: str, key: str) -> str:
        if os.environ.get(variable):
            return os.environ[variable]
        found = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True)
        return found.stdout.strip() if found.returncode == 0 else ""

    secrets = {}
    cert = pip_setting("PIP_CERT", "global.cert")
    if cert and Path(cert).is_file():
        secrets["pip_cert"] = Path(cert)
    index = pip_setting("PIP_INDEX_URL", "global.index-url")
    if index:
        secrets["pip_index_url"] = scratch / "index-url"
        secrets["pip_index_url"].write_text(index)
        secrets["pip_index_url"].chmod(0o600)
    return secrets


def image_size(docker: str, tag: str) -> int:
    found = subprocess.run([docker, "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True)
    return int(found.stdout.strip() or 0)


def run_builds(builds: list[ImageBuild], docker: str, dry_run: bool) -> list[tuple[str, float, int]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelpress-secrets-") as scratch:
        secrets = pip_secrets(Path(scratch))
        environment = {**os.environ, "DOCKER_BUILDKIT": "1"}  # BuildKit reads containers/Dockerfile.dockerignore
        for build in builds:
            command = build.command(docker, secrets)
            print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
            if dry_run:
                continue
            started = time.monotonic()
            done = subprocess.run(command, input=build.dockerfile_text or None, text=True, env=environment)
            if done.returncode != 0:
                raise UserError(f"docker build of {build.tag} failed (exit {done.returncode}); its output is above")
            rows.append((build.tag, time.monotonic() - started, image_size(docker, build.tag)))
    return rows


def main(argv: list[str] | None = None, prog: str = "modelpress images") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", help=f"image sets (default: {', '.join(cpu_sets())})")
    parser.add_argument("--gpu", action="store_true", help="also the CUDA variants and the GPU-only sets (tensorrt)")
    parser.add_argument("--with", dest="package", metavar="PATH_OR_REQUIREMENT", help="derive images carrying this builder package")
    parser.add_argument("--repository", help="image repository, e.g. registry.example.com/ml (default: MODELPRESS_IMAGE_REPOSITORY)")
    parser.add_argument("--python-image", help=f"Python 3.11 base image (default: {PUBLIC_PYTHON_IMAGE}, else a Debian-made one)")
    parser.add_argument("--dry-run", action="store_true", help="print the docker commands, build nothing")
    args = parser.parse_args(argv)
    known = [*DEPENDENCY_SETS, *ORCHESTRATOR_SETS]
    unknown = [s for s in args.sets if s not in known]
    if unknown:
        raise UserError(f"unknown image set '{unknown[0]}'; choose from {', '.join(known)}")
    sets = args.sets or (known if args.gpu else cpu_sets())
    docker = "docker" if args.dry_run else docker_cli()
    if not args.dry_run and not engine_running(docker):
        raise UserError(f"no Docker engine answers `{docker} info`; start one (dockerd) and run this again")
    if args.package:  # the images steps run in; the orchestrator's never loads a model
        builds = derived_builds(args.package, [s for s in sets if s not in ORCHESTRATOR_SETS], args.gpu, args.repository)
    else:
        base = args.python_image or (PUBLIC_PYTHON_IMAGE if args.dry_run else python_base(docker, None))
        builds = stock_builds(sets, args.gpu, args.repository, base)
    rows = run_builds(builds, docker, args.dry_run)
    for tag, seconds, size in rows:
        print(f"{tag:<64} {seconds:6.0f} s  {size / 1e9:5.2f} GB")
    if args.package and not args.dry_run:
        print(f"set kubernetes.image_tag: {derived_tag(args.package)} in the workflow to run in these images")
    return 0
