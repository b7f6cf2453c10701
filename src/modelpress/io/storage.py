"""Local paths and s3:// URIs behind one small interface.

Writers stage an output in a temporary place and move it into place last, so a killed step never leaves a half
output under the final name:
- local: a hidden sibling folder, renamed onto the final path (atomic on one file system);
- s3: uploaded under a hidden staging prefix, copied server-side to the final prefix with the completion marker
  (`artifact.json`, or the last file) copied last, then the staging prefix is deleted. Readers treat a prefix without
  its marker as absent.
Staging names are fixed per output (`.<name>.staging`), so a re-run first clears what a killed run left there,
incomplete multipart uploads included.

Small shared JSON documents (registry labels, deployment state) change by compare-and-swap (`update_json`): a
conditional PUT on the ETag on S3, an exclusive lock locally, retried on conflict, so no update is ever lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.contract.schema import StorageSettings

MARKER = "artifact.json"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # without leading or trailing slash

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        rest = uri[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise UserError(f"'{uri}' names no bucket; write s3://bucket/prefix")
        return cls(bucket, key.strip("/"))

    def child(self, name: str) -> str:
        return f"{self.key}/{name}" if self.key else name


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return "/".join([str(uri).rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(uri).joinpath(*parts))


def absolute_uri(uri: str) -> str:
    """The URI as any process on this machine can read it: s3:// as is, a local path made absolute."""
    return str(uri).rstrip("/") if is_s3(uri) else str(Path(uri).resolve())


# ------------------------------------------------------------------------------------------------------ S3 client
_settings = StorageSettings()


def configure(settings: StorageSettings | None) -> None:
    """Set the S3 endpoint/region/credentials for this process (from the workflow spec or a step config)."""
    global _settings
    _settings = settings or StorageSettings()
    s3_client.cache_clear()


@functools.lru_cache(maxsize=1)
def s3_client():
    from modelpress.common.errors import require

    boto3 = require("boto3", "s3")
    from botocore.config import Config

    kwargs = {
        "endpoint_url": _settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        "region_name": _settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "config": Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=10, read_timeout=120),
    }
    if _settings.access_key_id and _settings.secret_access_key:
        kwargs["aws_access_key_id"] = _settings.access_key_id
        kwargs["aws_secret_access_key"] = _settings.secret_access_key
    return boto3.client("s3", **kwargs)


def explain_s3_error(exc: Exception, uri: str) -> UserError:
    """Turn botocore errors into one actionable line."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return UserError(f"no S3 credentials for {uri}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, EndpointConnectionError):
        return UserError(f"cannot reach the S3 endpoint for {uri} ({exc}); check storage.endpoint_url / AWS_ENDPOINT_URL")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
            return UserError(f"bucket '{S3Location.parse(uri).bucket}' does not exist ({uri}); create it or fix the URI")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
            return UserError(f"S3 refused access to {uri} ({code}); check the credentials and the bucket policy")
        return UserError(f"S3 error on {uri}: {code or exc}")
    return UserError(f"S3 error on {uri}: {exc}")


@contextlib.contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise explain_s3_error(exc, uri) from None
    except S3UploadFailedError as exc:  # upload_file raises it while handling the ClientError: explain that one
        raise explain_s3_error(exc.__context__ if isinstance(exc.__context__, ClientError) else exc, uri) from None


def _objects(bucket: str, prefix: str) -> Iterator[dict]:
    """Every object whose key starts with `prefix`, page after page (Key, Size, ETag, ...)."""
    for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _list_keys(loc: S3Location) -> list[str]:
    return [obj["Key"] for obj in _objects(loc.bucket, f"{loc.key}/" if loc.key else "")]


def list_objects(uri: str) -> list[tuple[str, int, str]]:
    """(key relative to `uri`, size, ETag) of the object at `uri` and of every object under it as a folder, sorted;
    an empty list when there is none. One listing: nothing is downloaded."""
    loc = S3Location.parse(uri)
    found = []
    with s3_errors(uri):
        for obj in _objects(loc.bucket, loc.key):
            if obj["Key"] == loc.key or not loc.key or obj["Key"].startswith(f"{loc.key}/"):
                found.append((obj["Key"][len(loc.key) :].lstrip("/"), obj["Size"], obj["ETag"]))
    return sorted(found)


def list_keys(uri: str) -> list[str]:
    """Every object key under an s3:// prefix."""
    with s3_errors(uri):
        return _list_keys(S3Location.parse(uri))


def delete_keys(bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        chunk = [{"Key": k} for k in keys[start : start + 1000]]
        s3_client().delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})


def incomplete_uploads(uri: str) -> list[dict]:
    """Multipart uploads started under an s3:// prefix and never completed or aborted: Key, UploadId, Initiated."""
    if not is_s3(uri):
        return []
    loc = S3Location.parse(uri)
    uploads: list[dict] = []
    with s3_errors(uri):
        pages = s3_client().get_paginator("list_multipart_uploads").paginate(Bucket=loc.bucket, Prefix=f"{loc.key}/" if loc.key else "")
        for page in pages:
            uploads.extend({k: u[k] for k in ("Key", "UploadId", "Initiated")} for u in page.get("Uploads", []))
    return uploads


def abort_uploads(uri: str, uploads: list[dict] | None = None) -> int:
    """Abort the incomplete multipart uploads under a prefix (or the given ones); their parts stop costing storage."""
    if not is_s3(uri):
        return 0
    from botocore.exceptions import ClientError

    bucket = S3Location.parse(uri).bucket
    todo = incomplete_uploads(uri) if uploads is None else uploads
    for upload in todo:
        try:
            s3_client().abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":  # finished or aborted meanwhile
                raise explain_s3_error(exc, uri) from None
    return len(todo)


# ------------------------------------------------------------------------------------------------------ questions
def exists(uri: str) -> bool:
    """True for a local file/folder, an S3 object, or an S3 prefix holding at least one object."""
    if not is_s3(uri):
        return Path(uri).exists()
    loc = S3Location.parse(uri)
    with s3_errors(uri):
        client = s3_client()
        if loc.key:
            with contextlib.suppress(Exception):
                client.head_object(Bucket=loc.bucket, Key=loc.key)
                return True
        prefix = f"{loc.key}/" if loc.key else ""
        return client.list_objects_v2(Bucket=loc.bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0


def check_bucket(uri: str) -> None:
    """Fail early, before any work, when an s3:// output's bucket is missing or not ours."""
    if is_s3(uri):
        loc = S3Location.parse(uri)
        with s3_errors(uri):
            s3_client().head_bucket(Bucket=loc.bucket)


def read_bytes(uri: str) -> bytes:
    data = read_if_present(uri)
    if data is None:
        raise UserError(f"{uri} not found; check the path")
    return data


def read_if_present(uri: str) -> bytes | None:
    """A file's bytes, or None when there is no such file (one request: no race between a check and the read)."""
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
    from botocore.exceptions import ClientError

    loc = S3Location.parse(uri)
    with s3_errors(uri):
        try:
            return s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise


def write_bytes(uri: str, data: bytes) -> None:
    """Write one small object atomically (S3 PUT is atomic; locally via rename)."""
    if is_s3(uri):
        loc = S3Location.parse(uri)
        with s3_errors(uri):
            s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


CAS_ATTEMPTS = 40
CONFLICT_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def is_conflict(exc: Exception) -> bool:
    """A conditional write lost: the object changed (412) or another conditional write to it is in flight (409)."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in CONFLICT_CODES


def update_json(uri: str, change: Callable[[dict | None], dict | None]) -> tuple[dict | None, bool]:
    """Compare-and-swap a small JSON document: `change(current)` returns the new document, or None to leave it.

    S3: the write carries If-Match on the ETag read (If-None-Match when absent), and a conflict re-reads and asks
    `change` again. Locally: an exclusive lock beside the file serializes read-change-write. Returns the document
    as it stands afterwards and whether this call changed it.
    """
    if not is_s3(uri):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = json.loads(path.read_bytes()) if path.is_file() else None
            new = change(current)
            if new is None:
                return current, False
            write_bytes(uri, json.dumps(new, indent=2).encode())
            return new, True
    from botocore.exceptions import ClientError

    loc = S3Location.parse(uri)
    client = s3_client()
    for attempt in range(CAS_ATTEMPTS):
        with s3_errors(uri):
            try:
                response = client.get_object(Bucket=loc.bucket, Key=loc.key)
                current, condition = json.loads(response["Body"].read()), {"IfMatch": response["ETag"]}
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
                current, condition = None, {"IfNoneMatch": "*"}
        new = change(current)
        if new is None:
            return current, False
        try:
            client.put_object(Bucket=loc.bucket, Key=loc.key, Body=json.dumps(new, indent=2).encode(), **condition)
            return new, True
        except ClientError as exc:
            if not is_conflict(exc):
                raise explain_s3_error(exc, uri) from None
        time.sleep(min(0.02 * 2**attempt, 1.0) * random.random())  # another writer won: back off, read again
    raise UserError(f"{uri} kept changing under {CAS_ATTEMPTS} attempts to update it; retry when fewer writers run at once")


# -------------------------------------------------------------------------------------------- folders in and out
@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local folder or file with the content of `uri` (downloaded to a temporary folder for s3://)."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise UserError(f"{uri} not found; check the path")
        yield path
        return
    loc = S3Location.parse(uri)
    with tempfile.TemporaryDirectory(prefix="modelpress-in-") as tmp, s3_errors(uri):
        keys = _list_keys(loc)
        client = s3_client()
        if not keys:  # a single object
            target = Path(tmp) / Path(loc.key).name
            client.download_file(loc.bucket, loc.key, str(target))
            yield target
            return
        prefix_len = len(loc.key) + 1 if loc.key else 0
        for key in keys:
            target = Path(tmp) / key[prefix_len:]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(loc.bucket, key, str(target))
        yield Path(tmp)


def remove(uri: str) -> None:
    """Delete a file, folder or prefix; on S3 also abort the multipart uploads a killed writer left under it."""
    if is_s3(uri):
        loc = S3Location.parse(uri)
        with s3_errors(uri):
            abort_uploads(uri)
            delete_keys(loc.bucket, [*([loc.key] if loc.key else []), *_list_keys(loc)])  # the object itself, if any
    elif Path(uri).is_dir():
        shutil.rmtree(uri)
    elif Path(uri).exists():
        Path(uri).unlink()


def upload_folder(local: Path, uri: str, last: str | None = MARKER) -> None:
    """Copy a local folder to `uri`, with the file named `last` (the completion marker) written last."""
    if not is_s3(uri):
        shutil.copytree(local, uri, dirs_exist_ok=True)
        return
    loc = S3Location.parse(uri)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == last)
    with s3_errors(uri):
        client = s3_client()
        for path in files:
            client.upload_file(str(path), loc.bucket, loc.child(path.relative_to(local).as_posix()))


def check_output(uri: str, overwrite: bool) -> None:
    """Fail before any work when the output exists (without overwrite) or its bucket is missing."""
    check_bucket(uri)
    if exists(uri) and not overwrite:
        raise UserError(f"output {uri} already exists; pass --overwrite to replace it or choose another output")


@contextlib.contextmanager
def staged_output(uri: str, overwrite: bool = False, marker: str = MARKER) -> Iterator[Path]:
    """Yield a local folder to fill; on success it becomes `uri` in one last move. On error nothing changes at `uri`.

    `marker` is the file that completes the output (written last on S3; readers look for it).
    """
    check_output(uri, overwrite)
    if is_s3(uri):
        with tempfile.TemporaryDirectory(prefix="modelpress-out-") as tmp:
            yield Path(tmp)
            _publish_s3(Path(tmp), uri, marker)
        return
    final = Path(uri)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run of this step left
    staging.mkdir()
    try:
        yield staging
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _publish_s3(local: Path, uri: str, marker: str) -> None:
    """Upload to a staging prefix, then copy into place server-side with the marker last."""
    loc = S3Location.parse(uri)
    parent, _, name = loc.key.rpartition("/")
    staging_key = f"{parent}/.{name}.staging" if parent else f".{name}.staging"
    staging = S3Location(loc.bucket, staging_key)
    remove(f"s3://{loc.bucket}/{staging_key}")  # what a killed run of this step left, incomplete uploads included
    upload_folder(local, f"s3://{loc.bucket}/{staging_key}", last=marker)
    with s3_errors(uri):
        client = s3_client()
        old = _list_keys(loc)
        marker_keys = [k for k in old if k.rsplit("/", 1)[-1] == marker]
        delete_keys(loc.bucket, marker_keys)  # the old version stops being visible before any file changes
        staged = _list_keys(staging)
        staged.sort(key=lambda k: k.rsplit("/", 1)[-1] == marker)
        new_keys = set()
        for key in staged:
            relative = key[len(staging_key) + 1 :]
            target = loc.child(relative)
            new_keys.add(target)
            client.copy({"Bucket": loc.bucket, "Key": key}, loc.bucket, target)
        delete_keys(loc.bucket, [k for k in old if k not in new_keys and k not in marker_keys])
        delete_keys(loc.bucket, staged)


# ------------------------------------------------------------------------------ exclusive create, retries, multipart
def create_exclusive(uri: str, data: bytes) -> bool:
    """Write a small object only if nothing is there yet, atomically. False when it already exists."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        loc = S3Location.parse(uri)
        try:
            s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            # 412: the object exists; 409: another conditional write to it is in flight
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise explain_s3_error(exc, uri) from None
        return True
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails if the path exists: an exclusive create that is never seen half-written
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "500", "502", "503", "504",
}
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx and dropped connections: worth another try. Credentials or a missing bucket are not."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, S3UploadFailedError):  # upload_file raises it while handling the ClientError
        exc = exc.__context__
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "") in TRANSIENT_CODES
    return isinstance(exc, (ConnectionClosedError, EndpointConnectionError, ReadTimeoutError, ConnectionError))


def with_retries(action: Callable[[], T], what: str, retries: int, first_delay: float = 0.5) -> T:
    """Run `action`, retrying transient S3 errors with exponential backoff and jitter (0.5 s, 1 s, 2 s, ...)."""
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - filtered by is_transient, anything else is re-raised
            if attempt == retries or not is_transient(exc):
                raise
            delay = first_delay * 2**attempt * (0.5 + random.random())
            log(f"{what}: transient error ({str(exc).splitlines()[0][:120]}); retry {attempt + 1}/{retries} in {delay:.1f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def transfer_config(part_size_mb: int, max_concurrency: int):
    """Multipart settings that bound memory: at most ~(concurrency + io queue) parts in flight."""
    from boto3.s3.transfer import TransferConfig

    part = part_size_mb * 1024 * 1024
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=max_concurrency)
    config.max_in_memory_upload_chunks = max_concurrency * 2  # s3transfer's read-ahead; its default is 10 parts
    return config


def put_file(path: Path, uri: str, transfer, retries: int) -> None:
    """Copy one local file to a path or an S3 key (multipart above the part size), retrying transient errors."""
    if is_s3(uri):
        loc = S3Location.parse(uri)
        with s3_errors(uri):
            with_retries(
                lambda: s3_client().upload_file(str(path), loc.bucket, loc.key, Config=transfer),
                f"upload {loc.key}",
                retries,
            )
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)
