"""Shards: the files a streamed data set is made of, local or s3://, listed without reading them and read one record
at a time.

S3 objects are streamed with boto3 and the TFRecord framing is parsed here (length, masked CRC-32C of the length,
payload, masked CRC-32C of the payload), because TensorFlow 2.21 ships no s3:// filesystem (tensorflow-io, which had
one, has no build for it). Streaming keeps nothing but the record being read in memory, checks every checksum as the
native reader does, and goes through the same boto3 client and credentials as every other ModelPress S3 call. A
dropped connection resumes at the last whole record with an HTTP Range request.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelpress.common.errors import UserError
from modelpress.io import storage

GLOB_CHARACTERS = "*?["
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
CHUNK_BYTES = 1 << 20
RESUME_ATTEMPTS = 3


@dataclass(frozen=True)
class Shard:
    uri: str  # local path or s3://bucket/key
    name: str  # relative to the listed root: what record keys and the digest are made of
    size: int
    version: str  # S3 ETag, or the local file's modification time: what the scan cache is keyed on


class CorruptShard(Exception):
    """A shard whose bytes are not what its framing says: a one-line reason, the shard named by the caller."""


def list_shards(path: str, suffixes: tuple[str, ...] | None = None) -> list[Shard]:
    """The files at `path`: one file, every file under a folder or prefix, or the files matching a glob; sorted by
    name. `suffixes`: keep only files ending so (image folders). Hidden files and folders are skipped."""
    if storage.is_s3(path):
        root, pattern = _split_glob(path)
        shards = [
            Shard(storage.join(root, key) if key else root, key or root.rsplit("/", 1)[-1], size, etag.strip('"'))
            for key, size, etag in storage.list_objects(root)
        ]
    else:
        root, pattern = _split_glob(path)
        if pattern is not None:
            files = [Path(f) for f in glob.glob(path, recursive=True)]
        else:
            base = Path(root)
            files = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        base = Path(root)
        shards = [
            Shard(str(f), f.name if f == base else f.relative_to(base).as_posix(), f.stat().st_size, str(f.stat().st_mtime_ns))
            for f in files
            if f.is_file()
        ]
    if pattern is not None:
        shards = [s for s in shards if fnmatch.fnmatch(s.name, pattern)]
    shards = [s for s in shards if not any(part.startswith(".") for part in s.name.split("/"))]
    if suffixes is not None:
        shards = [s for s in shards if s.name.lower().endswith(suffixes)]
    if not shards:
        found = "holds no objects" if storage.is_s3(path) else "does not exist or holds no files"
        raise UserError(f"{path} {found}; point it at a file, a folder or prefix of shards, or a glob like train-*.tfrecord")
    return sorted(shards, key=lambda s: s.name)


def _split_glob(path: str) -> tuple[str, str | None]:
    """'root/dir/train-*.tfrecord' -> ('root/dir', 'train-*.tfrecord'); a path without wildcards -> (path, None)."""
    parts = path.rstrip("/").split("/")
    first = next((i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARACTERS)), None)
    if first is None:
        return path.rstrip("/"), None
    return "/".join(parts[:first]), "/".join(parts[first:])


def listing_digest(shards: list[Shard]) -> str:
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(f"{shard.name}\0{shard.size}\0{shard.version}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ TFRecord framing
def masked_crc(data) -> int:
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def s3_records(uri: str) -> Iterator[bytes]:
    """The payload of every TFRecord in an S3 object, checksums verified, read in 1 MiB chunks."""
    from botocore.exceptions import BotoCoreError

    if isinstance(uri, bytes):  # tf.data.Dataset.from_generator passes its args as bytes
        uri = uri.decode()
    location = storage.S3Location.parse(uri)
    position, buffer, attempts = 0, b"", 0  # position: byte offset of buffer[0] in the object
    while True:
        try:
            with storage.s3_errors(uri):
                extra = {"Range": f"bytes={position}-"} if position else {}
                body = storage.s3_client().get_object(Bucket=location.bucket, Key=location.key, **extra)["Body"]
            for chunk in body.iter_chunks(CHUNK_BYTES):
                buffer += chunk
                records, consumed = _records_in(buffer, position)
                yield from records
                buffer, position = buffer[consumed:], position + consumed
            break
        except (ConnectionError, OSError, BotoCoreError) as exc:  # the stream broke: resume after the last whole record
            attempts += 1
            if attempts > RESUME_ATTEMPTS:
                raise CorruptShard(f"reading failed at byte {position} after {RESUME_ATTEMPTS} resumes ({exc})") from None
            buffer = b""
    if buffer:
        raise CorruptShard(f"ends inside a record at byte {position} ({len(buffer)} bytes left over): the shard is truncated")


def _records_in(buffer: bytes, offset: int) -> tuple[list[bytes], int]:
    """The whole records at the start of `buffer` and the bytes they take; `offset` (the buffer's place in the
    object) only for messages."""
    view, start, records = memoryview(buffer), 0, []
    while len(view) - start >= 12:
        (length,) = struct.unpack_from("<Q", view, start)
        (length_crc,) = struct.unpack_from("<I", view, start + 8)
        if masked_crc(view[start : start + 8]) != length_crc:
            raise CorruptShard(f"record at byte {offset + start}: the length checksum does not match (not TFRecord data, or damaged)")
        end = start + 12 + length + 4
        if len(view) < end:
            break
        payload = view[start + 12 : end - 4]
        (payload_crc,) = struct.unpack_from("<I", view, end - 4)
        if masked_crc(payload) != payload_crc:
            raise CorruptShard(f"record at byte {offset + start}: the data checksum does not match (damaged)")
        records.append(bytes(payload))
        start = end
    return records, start


def read_object(uri) -> bytes:
    """One whole object or file (an image of an image folder)."""
    if isinstance(uri, bytes):
        uri = uri.decode()
    return storage.read_bytes(uri)


def write_tfrecord_shard(path: str, images, labels) -> None:
    """Write uint8 images and their int labels as one TFRecord shard (tf.train.Example features `image`: raw bytes,
    `label`: int64), the layout the tfrecord source reads by default; local or s3:// (staged on local disk, then
    uploaded). The records are encoded here, without TensorFlow: a benchmark writes gigabytes of them."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelpress-shard-") as scratch:
        local = Path(path if not storage.is_s3(path) else Path(scratch) / "shard.tfrecord")
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "wb") as handle:
            for image, label in zip(images, labels, strict=True):
                handle.write(tfrecord_frame(example_bytes(image.tobytes(), int(label))))
        if storage.is_s3(path):
            storage.put_file(local, path, storage.transfer_config(64, 4), retries=3)


def tfrecord_frame(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc(length)) + payload + struct.pack("<I", masked_crc(payload))


def example_bytes(image: bytes, label: int) -> bytes:
    """A serialized tf.train.Example {image: BytesList[image], label: Int64List[label]} in protobuf wire format."""

    def varint(value: int) -> bytes:
        value &= (1 << 64) - 1  # int64: negative values as ten-byte two's complement
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited field
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    def entry(key: str, feature: bytes) -> bytes:  # one map<string, Feature> entry of Features
        return field(1, field(1, key.encode()) + field(2, feature))

    bytes_list = field(1, field(1, image))  # Feature.bytes_list { value: image }
    int64_list = field(3, field(1, varint(label)))  # Feature.int64_list { value: [label] } (packed)
    return field(1, entry("image", bytes_list) + entry("label", int64_list))
