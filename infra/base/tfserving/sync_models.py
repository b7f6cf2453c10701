"""Mirror TF Serving's model base path from object storage into the pod's /models volume.

TF Serving (2.7 and later) cannot read s3:// itself, so the deploy step writes the base path to the bucket
(serving.base_path: s3://.../serving, serving.mount_path: /models) and this loop, a sidecar of the TF Serving pod
(the modelpress-base image), copies it down:
- a version folder appears under /models/<model>/<version> only complete: it is downloaded next to it and renamed
  into place, and only once the bucket holds its saved_model.pb (which deploy writes last);
- models.config (written by deploy and rollback) replaces the local one atomically; TF Serving polls it;
- with nothing deployed yet, the ConfigMap's bootstrap models.config is used, so TF Serving can start.
Versions are never deleted here: deploy keeps the previous stable one for a quick rollback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from modelpress.io import storage
from modelpress.steps.deploy.serving import CONFIG_FILE, deployed_models
from modelpress.steps.deploy.step import complete_versions


def replace_file(path: Path, data: bytes) -> bool:
    """Write `data` to `path` through a temporary file and a rename; False when it already holds it."""
    if path.exists() and path.read_bytes() == data:
        return False
    staged = path.with_name(f".{path.name}.partial")
    staged.write_bytes(data)
    os.replace(staged, path)
    return True


def sync_once(source: str, target: Path, bootstrap: Path | None = None) -> list[str]:
    """One pass; returns what changed (e.g. 'digits-mlp/3', 'models.config')."""
    changed = []
    for model in deployed_models(source):
        for version in complete_versions(source, model):
            destination = target / model / str(version)
            if destination.exists():
                continue
            staged = target / model / f".{version}.partial"
            shutil.rmtree(staged, ignore_errors=True)  # left by a killed pass
            with storage.local_copy(storage.join(source, model, str(version))) as folder:
                shutil.copytree(folder, staged)
            os.replace(staged, destination)
            changed.append(f"{model}/{version}")
    config_uri = storage.join(source, CONFIG_FILE)
    if storage.exists(config_uri):
        data = storage.read_bytes(config_uri)
    elif not (target / CONFIG_FILE).exists() and bootstrap is not None:
        data = bootstrap.read_bytes()
    else:
        data = None
    if data is not None and replace_file(target / CONFIG_FILE, data):
        changed.append(CONFIG_FILE)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=os.environ.get("MODELPRESS_SERVING_BASE"), help="s3://bucket/serving")
    parser.add_argument("--target", type=Path, default=Path("/models"), help="the volume TF Serving reads")
    parser.add_argument("--bootstrap", type=Path, help="models.config to use while nothing is deployed")
    parser.add_argument("--interval", type=float, default=0, help="seconds between passes; 0: one pass and exit")
    args = parser.parse_args(argv)
    if not args.source:
        parser.error("set --source or MODELPRESS_SERVING_BASE to the serving base path (s3://bucket/serving)")
    args.target.mkdir(parents=True, exist_ok=True)
    while True:
        for item in sync_once(args.source, args.target, args.bootstrap):
            print(f"synced {item}", flush=True)
        if not args.interval:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
