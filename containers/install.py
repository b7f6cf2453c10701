"""pip install inside an image build: requirements, or the project itself.

    python3 install.py REQUIREMENT [REQUIREMENT ...] [--constraint FILE ...]
    python3 install.py --project DIR            the package alone (its requirements are already installed)

The requirements come as a build argument (containers/build.py reads them from pyproject.toml's extras), so a
dependency layer is rebuilt only when its requirements or the constraints change, not on any pyproject edit.
Build secrets (never stored in a layer) carry what this machine's pip needs to reach its index: `pip_cert` (a CA
bundle) and `pip_index_url`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PIP = "/opt/modelpress/bin/pip"
SECRETS = Path("/run/secrets")


def pip_environment() -> dict[str, str]:
    environment = dict(os.environ)
    if (SECRETS / "pip_cert").is_file():
        environment["PIP_CERT"] = str(SECRETS / "pip_cert")
    if (SECRETS / "pip_index_url").is_file():
        environment["PIP_INDEX_URL"] = (SECRETS / "pip_index_url").read_text().strip()
    return environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requirements", nargs="*")
    parser.add_argument("--constraint", action="append", default=[str(HERE / "constraints.txt")])
    parser.add_argument("--project", help="install this project folder without its dependencies")
    args = parser.parse_args()
    if args.project:
        # The build backend came with the dependencies: this layer needs no network.
        command = [VENV_PIP, "install", "--no-deps", "--no-build-isolation", "--no-compile", args.project]
    elif args.requirements:
        command = [VENV_PIP, "install", *(f"--constraint={c}" for c in args.constraint), *args.requirements]
    else:  # a set with nothing beyond the common layer (base)
        return
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=pip_environment())


if __name__ == "__main__":
    main()
