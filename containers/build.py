"""Build the container images: one per dependency set (registry.DEPENDENCY_SETS), tagged with the package version.

    python containers/build.py                 build every image (needs a Docker engine with BuildKit)
    python containers/build.py tf base         build some
    python containers/build.py --dry-run       print the docker commands only

The tags are `registry.image_for(set, gpu=...)`, the very names the Kubeflow and Airflow adapters put in their
tasks; MODELPRESS_IMAGE_REPOSITORY (or --repository) changes the registry part. A set in registry.GPU_VARIANT_SETS
(tf) is built twice: its Dockerfile's `cpu` stage, and its `gpu` stage (CUDA) tagged `<version>-gpu`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from modelpress import __version__
from modelpress._core.registry import DEPENDENCY_SETS, GPU_VARIANT_SETS, image_for

ROOT = Path(__file__).resolve().parents[1]


def variants(dependency_set: str) -> list[tuple[str | None, bool]]:
    """(Dockerfile target, GPU) of each image built from a set; target None: the Dockerfile's last stage."""
    return [("cpu", False), ("gpu", True)] if dependency_set in GPU_VARIANT_SETS else [(None, False)]


def build_commands(sets: list[str], repository: str | None = None) -> list[list[str]]:
    commands = []
    for name in sets:
        dockerfile = ROOT / "containers" / name / "Dockerfile"
        for target, gpu in variants(name):
            command = ["docker", "build", "--file", str(dockerfile), "--build-arg", f"VERSION={__version__}"]
            command += ["--tag", image_for(name, repository=repository, gpu=gpu)]
            command += ["--target", target] if target else []
            commands.append([*command, str(ROOT)])
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", help=f"dependency sets to build (default: all of {', '.join(DEPENDENCY_SETS)})")
    parser.add_argument("--repository", help="image repository, e.g. registry.example.com/ml (default: the registry's)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, build nothing")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sets if s not in DEPENDENCY_SETS]
    if unknown:
        print(f"unknown dependency set '{unknown[0]}'; choose from {', '.join(DEPENDENCY_SETS)}", file=sys.stderr)
        return 2
    commands = build_commands(args.sets or list(DEPENDENCY_SETS), args.repository)
    if args.dry_run:
        print("\n".join(shlex.join(c) for c in commands))
        return 0
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        print("no Docker engine reachable (`docker info` failed); run `make images` where Docker runs", file=sys.stderr)
        return 2
    environment = {**os.environ, "DOCKER_BUILDKIT": "1"}  # BuildKit reads the per-Dockerfile .dockerignore
    for command in commands:
        print(f"+ {shlex.join(command)}", flush=True)
        subprocess.run(command, check=True, env=environment)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
