"""pip install inside an image build: the requirements of pyproject extras, or the project itself.

    python3 install.py EXTRA [EXTRA ...] [--also REQ ...] [--constraint FILE ...]
    python3 install.py --project DIR            the package alone (its requirements are already installed)

Runs with the image's Python before the source is copied, so the dependency layers depend on pyproject.toml and the
constraints only. Build secrets (never stored in a layer) carry what this machine's pip needs to reach its index:
`pip_cert` (a CA bundle) and `pip_index_url`; containers/build.py passes them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PIP = "/opt/modelpress/bin/pip"
SECRETS = Path("/run/secrets")


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        if extra not in project["optional-dependencies"]:
            raise SystemExit(f"pyproject.toml has no extra '{extra}'")
        found += project["optional-dependencies"][extra]
    # An extra may name the project's own other extras ("modelpress[tf]"): expand them here.
    own = [r for r in found if re.match(r"modelpress\[", r)]
    for requirement in own:
        found.remove(requirement)
        found += requirements(re.search(r"\[(.*)\]", requirement).group(1).split(","))
    return sorted(set(found))


def pip_environment() -> dict[str, str]:
    environment = dict(os.environ)
    if (SECRETS / "pip_cert").is_file():
        environment["PIP_CERT"] = str(SECRETS / "pip_cert")
    if (SECRETS / "pip_index_url").is_file():
        environment["PIP_INDEX_URL"] = (SECRETS / "pip_index_url").read_text().strip()
    return environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--also", nargs="*", default=[], help="further requirements (kfp; the build backend)")
    parser.add_argument("--constraint", action="append", default=[str(HERE / "constraints.txt")])
    parser.add_argument("--project", help="install this project folder without its dependencies")
    args = parser.parse_args()
    if args.project:
        # The build backend came with the dependencies: this layer needs no network.
        command = [VENV_PIP, "install", "--no-deps", "--no-build-isolation", "--no-compile", args.project]
    else:
        command = [VENV_PIP, "install", *(f"--constraint={c}" for c in args.constraint), *requirements(args.extras), *args.also]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=pip_environment())


if __name__ == "__main__":
    main()
