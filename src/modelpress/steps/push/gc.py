"""`modelpress registry gc MODEL`: find and (with --delete) remove what interrupted pushes left in a registry.

Debris is: a version claim whose version never got its manifest (an abandoned number), a bundle claim a killed push
never gave back (other pushes of those models wait for it), the objects of such an incomplete version, multipart uploads never completed under the model, and local `.incoming/` folders. Anything
younger than --older-than seconds is left alone: it may belong to a push still running. Complete versions, their
claims and labels are never touched.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from modelpress.common.names import check_name
from modelpress.common.progress import log
from modelpress.io import releases, storage

DEFAULT_MIN_AGE_S = 3600


@dataclass
class Debris:
    kind: str  # "claim", "bundle claim", "partial version", "upload", "incoming"
    uri: str
    detail: str
    upload: dict | None = None


def find_debris(root: str, model: str, older_than_s: float = DEFAULT_MIN_AGE_S) -> list[Debris]:
    check_name(model, "model name")
    now = time.time()
    complete = set(releases.list_versions(root, model))
    found: list[Debris] = []
    for version in releases.claimed_versions(root, model):
        claim = releases.read_claim(root, model, version)
        if version in complete or claim is None:
            continue
        age = now - claim["claimed"] if claim.get("claimed") else float("inf")
        if age >= older_than_s:
            found.append(Debris("claim", releases.claim_uri(root, model, version), f"version {version}, run {claim['run_id']}, {age:.0f}s old"))
    for digest in releases.bundle_claims(root, model):
        uri = releases.bundle_claim_uri(root, model, digest)
        claim = releases.read_json_claim(uri)
        age = now - claim["claimed"] if claim and claim.get("claimed") else float("inf")
        if claim is not None and age >= older_than_s:
            found.append(Debris("bundle claim", uri, f"digest {digest[:12]}, run {claim.get('run_id')}, {age:.0f}s old"))
    claimed_recently = {v for v in releases.claimed_versions(root, model) if v not in complete} - {
        int(d.uri.rsplit("/", 1)[-1]) for d in found if d.kind == "claim"
    }
    for version in releases.version_folders(root, model):
        if version not in complete and version not in claimed_recently:
            found.append(Debris("partial version", releases.version_uri(root, model, version), f"version {version} has no manifest"))
    for upload in storage.incomplete_uploads(releases.model_uri(root, model)):
        age = now - upload["Initiated"].timestamp() if isinstance(upload["Initiated"], datetime) else float("inf")
        if age >= older_than_s:
            found.append(Debris("upload", f"s3://{storage.S3Location.parse(root).bucket}/{upload['Key']}", f"started {age:.0f}s ago", upload))
    incoming = Path(releases.model_uri(root, model)) / releases.INCOMING_DIR
    if not storage.is_s3(root) and incoming.is_dir():
        for folder in sorted(incoming.iterdir()):
            age = now - folder.stat().st_mtime
            if age >= older_than_s:
                found.append(Debris("incoming", str(folder), f"{age:.0f}s old"))
    return found


def collect(root: str, debris: list[Debris]) -> None:
    """Remove the debris found; partial versions and incoming folders before the claims that reserve them."""
    order = {"upload": 0, "incoming": 1, "partial version": 2, "claim": 3, "bundle claim": 4}
    for item in sorted(debris, key=lambda d: order[d.kind]):
        if item.kind == "upload":
            storage.abort_uploads(root, [item.upload])
        elif item.kind == "incoming":
            shutil.rmtree(item.uri, ignore_errors=True)
        else:
            storage.remove(item.uri)


def add_arguments(parser) -> None:
    parser.add_argument("model")
    parser.add_argument("--uri", help="registry: s3://bucket/prefix or folder (default: $MODELPRESS_REGISTRY)")
    parser.add_argument("--delete", action="store_true", help="remove what is listed (default: list only)")
    parser.add_argument(
        "--older-than", type=float, default=DEFAULT_MIN_AGE_S, metavar="SECONDS",
        help=f"leave anything younger alone: it may be a push still running (default {DEFAULT_MIN_AGE_S})",
    )


def cmd_gc(args, root: str) -> int:
    debris = find_debris(root, args.model, args.older_than)
    for item in debris:
        print(f"{item.kind:<16} {item.uri}  ({item.detail})")
    if not debris:
        print(f"nothing to collect for '{args.model}' in {root}")
    elif args.delete:
        collect(root, debris)
        log(f"removed {len(debris)} item(s)")
    else:
        print(f"{len(debris)} item(s); dry run: pass --delete to remove them")
    return 0
