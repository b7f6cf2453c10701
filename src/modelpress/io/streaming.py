"""Streamed data: TFRecord shards and image folders, local or s3://, read as tf.data pipelines whose memory is bounded
by data.streaming (shards read at once, the shuffle buffer of serialized records, batches prefetched), never by the
size of the data set.

Splits: each record has a key (its shard name and position, `data.key_feature`, or an image's path under the folder),
and a hash of the key and split.seed puts it in train, val or test - the same record lands in the same split whatever
else the data holds, streamed or read into memory. `data.test_path` / `data.val_path` name shards that are a split.

Before its first batch a data set scans each shard once: records per split, labels, and every record's framing,
checksums and image size, so a damaged shard is one error that names it before any training. The scan is cached on
local disk per shard (keyed by its name, size and ETag or modification time), so later steps on the same machine
only list. The data digest is the shard listing's plus the spec's (io.data.source_digest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.io import shards as shard_io
from modelpress.io import storage
from modelpress.io.shards import Shard

SPLITS = ("train", "val", "test")
HASH_BUCKETS = 1_000_000
SCAN_BATCH = 2048


def split_ids(keys, split) -> object:
    """0 (train), 1 (val) or 2 (test) for each key: a stable hash of the split seed and the key against the shares."""
    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    buckets = tf.strings.to_hash_bucket_fast(tf.strings.join([tf.constant(f"{split.seed}/"), keys]), HASH_BUCKETS)
    position = (tf.cast(buckets, tf.float64) + 0.5) / HASH_BUCKETS
    val_bound = split.test + (1.0 - split.test) * split.val
    return tf.where(position < split.test, 2, tf.where(position < val_bound, 1, 0))


def cache_folder() -> Path:
    return Path(os.environ.get("MODELPRESS_CACHE") or Path.home() / ".cache" / "modelpress") / "shard-scans"


@dataclass
class ShardSet:
    """The shards at one path and the splits they feed: `mixed` ones are split by key hash, the others are one split."""

    path: str
    split: str | None  # None: mixed
    shards: list[Shard]
    scans: list[dict] = field(default_factory=list)  # per shard: {"splits": [train, val, test], "labels": [count per label]}

    def count(self, split: str) -> int:
        if self.split is not None:
            return sum(sum(scan["splits"]) for scan in self.scans) if split == self.split else 0
        return sum(scan["splits"][SPLITS.index(split)] for scan in self.scans)


class ShardReader:
    """How one source's files become (key, payload, label) records and decoded batches; shared by the streamed data
    set and the in-memory loaders of the same sources."""

    def __init__(self, spec):
        self.spec = spec
        self.images = spec.source == "image_folder"
        self.split_rule = spec.split.model_copy(
            update={"test": 0.0 if spec.test_path else spec.split.test, "val": 0.0 if spec.val_path else spec.split.val}
        )
        self.class_names: list[str] = []
        # Streamed: as many decoding threads as shards read at once, fixed (tf.data's autotuning grows its buffers
        # over a long run: memory would follow the data's size). In memory: autotuned.
        self.parallel_calls = spec.streaming.parallel_reads if spec.streaming else -1  # -1: tf.data.AUTOTUNE

    # -------------------------------------------------------------------------------------------------- listing
    def shard_sets(self) -> dict[str, ShardSet]:
        """For each split, the set of shards it is read from."""
        main = self._listed(self.spec.path, None)
        sets = {name: main for name in SPLITS}
        for name, path in (("test", self.spec.test_path), ("val", self.spec.val_path)):
            if path:
                sets[name] = self._listed(path, name)
        return sets

    def _listed(self, path: str, split: str | None) -> ShardSet:
        if not self.images:
            return ShardSet(path, split, shard_io.list_shards(path))
        files = shard_io.list_shards(path, suffixes=shard_io.IMAGE_SUFFIXES)
        in_classes = [f for f in files if "/" in f.name]  # images sit in one folder per class
        classes = sorted({f.name.split("/", 1)[0] for f in in_classes})
        if split is None:
            if len(classes) < 2:
                raise UserError(f"{path} needs one sub-folder per class (at least 2); found {len(classes)}")
            self.class_names = classes
        elif unknown := sorted(set(classes) - set(self.class_names)):
            raise UserError(f"{path}: class folder '{unknown[0]}' is not a class of {self.spec.path} ({', '.join(self.class_names[:8])})")
        if not in_classes:
            raise UserError(f"{path} holds no images ({', '.join(shard_io.IMAGE_SUFFIXES)}) in its class folders")
        return ShardSet(path, split, in_classes)

    def label_of(self, shard: Shard) -> int:
        return self.class_names.index(shard.name.split("/", 1)[0]) if self.images else -1

    # ------------------------------------------------------------------------------------------------- records
    def records(self, shard_set: ShardSet, chosen: list[Shard], cycle: int, shuffle_seed: int | None = None):
        """(key, payload, label) of every record in `chosen` shards, `cycle` read at once; in a fixed order, or with
        the shards in a seeded order that changes every epoch."""
        from modelpress.common.tf import import_tf

        tf, _ = import_tf()
        files = tf.data.Dataset.from_tensor_slices(
            ([s.uri for s in chosen], [s.name for s in chosen], np.asarray([self.label_of(s) for s in chosen], dtype=np.int64))
        )
        if shuffle_seed is not None:
            files = files.shuffle(len(chosen), seed=shuffle_seed, reshuffle_each_iteration=True)
        remote = storage.is_s3(shard_set.path)
        return files.interleave(
            lambda uri, name, label: self._read_file(tf, uri, name, label, remote),
            cycle_length=max(1, min(cycle, len(chosen))),
            num_parallel_calls=max(1, min(cycle, len(chosen))),
            deterministic=True,
        )

    def _read_file(self, tf, uri, name, label, remote: bool):
        if self.images:
            payload = (
                tf.ensure_shape(tf.numpy_function(shard_io.read_object, [uri], tf.string, stateful=False), [])
                if remote
                else tf.io.read_file(uri)
            )
            return tf.data.Dataset.from_tensors((name, payload, label))
        if remote:
            raw = tf.data.Dataset.from_generator(
                shard_io.s3_records, args=(uri,), output_signature=tf.TensorSpec([], tf.string)
            )
        else:
            raw = tf.data.TFRecordDataset(uri)
        key_feature = self.spec.key_feature

        def keyed(index, payload):
            if key_feature:
                key = tf.io.parse_single_example(payload, {key_feature: tf.io.FixedLenFeature([], tf.string)})[key_feature]
            else:
                key = tf.strings.join([name, tf.strings.as_string(index)], separator=":")
            return key, payload, label

        return raw.enumerate().map(keyed)

    # -------------------------------------------------------------------------------------------------- decoding
    def decoded_batches(self, records, batch_size: int, keys: bool = False):
        """Batches of (float32 inputs, int64 labels) from (key, payload, label) records; `keys`: (inputs, labels, keys)."""
        from modelpress.common.tf import import_tf

        tf, _ = import_tf()
        spec = self.spec
        if self.images:
            size = list(spec.image_size)

            def decode_image(key, payload, label):
                image = tf.io.decode_image(payload, channels=spec.image_channels, expand_animations=False)
                return tf.image.resize(tf.cast(image, tf.float32), size) / 255.0, label, key

            batches = records.map(decode_image, num_parallel_calls=self.parallel_calls).batch(batch_size)
        else:
            features = {
                spec.image_key: tf.io.FixedLenFeature([], tf.string),
                spec.label_key: tf.io.FixedLenFeature([], tf.int64),
            }
            dtype = tf.uint8 if spec.dtype == "uint8" else tf.float32

            def decode_records(keys, payloads, _labels):
                parsed = tf.io.parse_example(payloads, features)
                values = tf.io.decode_raw(parsed[spec.image_key], dtype)
                images = tf.reshape(tf.cast(values, tf.float32), [-1, *spec.shape]) / spec.scale
                return images, parsed[spec.label_key], keys

            batches = records.batch(batch_size).map(decode_records, num_parallel_calls=self.parallel_calls)
        if self._reshapes:
            batches = batches.map(self._reshape, num_parallel_calls=self.parallel_calls)
        return batches if keys else batches.map(lambda images, labels, _keys: (images, labels))

    @property
    def example_shape(self) -> tuple[int, ...]:
        shape = (*self.spec.image_size, self.spec.image_channels) if self.images else tuple(self.spec.shape)
        if self._reshapes and len(shape) != 3:
            raise UserError(f"data.resize/channels apply to images (H, W, C); this data has shape {shape}")
        if self.spec.resize is not None:
            shape = (*self.spec.resize, shape[2])
        if self.spec.channels is not None:
            shape = (*shape[:2], self.spec.channels)
        return shape

    @property
    def _reshapes(self) -> bool:
        return self.spec.resize is not None or self.spec.channels is not None

    def _reshape(self, images, labels, keys):
        from modelpress.common.tf import import_tf

        tf, _ = import_tf()
        if self.spec.resize is not None:
            images = tf.image.resize(images, list(self.spec.resize))
        channels = images.shape[-1]
        if self.spec.channels == 3 and channels == 1:
            images = tf.repeat(images, 3, axis=-1)
        elif self.spec.channels == 1 and channels == 3:
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        return images, labels, keys

    # ------------------------------------------------------------------------------------------------------ scan
    def scan(self, shard_set: ShardSet) -> None:
        """Fill shard_set.scans: per shard, records per split and labels; checks every TFRecord on the way."""
        if self.images:  # one file per example: the listing is the count; images are checked as they are decoded
            keys = [s.name for s in shard_set.shards]
            ids = self._split_of(keys, shard_set)
            shard_set.scans = [
                {"splits": np.bincount([i], minlength=3).tolist(), "labels": np.bincount([self.label_of(s)], minlength=1).tolist()}
                for s, i in zip(shard_set.shards, ids, strict=True)
            ]
            return
        shard_set.scans = [self._cached_scan(shard_set, shard) for shard in shard_set.shards]

    def _split_of(self, keys, shard_set: ShardSet) -> np.ndarray:
        if shard_set.split is not None:
            return np.full(len(keys), SPLITS.index(shard_set.split))
        return split_ids(keys, self.split_rule).numpy() if len(keys) else np.zeros(0, dtype=np.int64)

    def _cached_scan(self, shard_set: ShardSet, shard: Shard) -> dict:
        scanned_as = {k: getattr(self.spec, k) for k in ("image_key", "label_key", "shape", "dtype", "key_feature")}
        identity = json.dumps([shard.uri, shard.size, shard.version, scanned_as, self.split_rule.model_dump(), shard_set.split])
        cached = cache_folder() / f"{hashlib.sha256(identity.encode()).hexdigest()}.json"
        with contextlib.suppress(OSError, ValueError):
            return json.loads(cached.read_text())
        scan = self._scan_shard(shard_set, shard)
        with contextlib.suppress(OSError):  # a read-only home only costs the next step a rescan
            cached.parent.mkdir(parents=True, exist_ok=True)
            staged = cached.with_suffix(f".{os.getpid()}.tmp")
            staged.write_text(json.dumps(scan))
            staged.replace(cached)
        return scan

    def _scan_shard(self, shard_set: ShardSet, shard: Shard) -> dict:
        from modelpress.common.tf import import_tf

        tf, _ = import_tf()
        spec = self.spec
        features = {spec.image_key: tf.io.FixedLenFeature([], tf.string), spec.label_key: tf.io.FixedLenFeature([], tf.int64)}
        expected = int(np.prod(spec.shape)) * (1 if spec.dtype == "uint8" else 4)
        splits, labels, seen = np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
        with corrupt_shard_errors(shard.uri):
            for keys, payloads, _ in self.records(shard_set, [shard], 1).batch(SCAN_BATCH):
                parsed = tf.io.parse_example(payloads, features)
                sizes = tf.strings.length(parsed[spec.image_key]).numpy()
                if (bad := np.flatnonzero(sizes != expected)).size:
                    raise UserError(
                        f"{shard.uri}: record {seen + bad[0]} has {sizes[bad[0]]} image bytes, data.shape {spec.shape} "
                        f"({spec.dtype}) needs {expected}; fix data.shape or data.dtype"
                    )
                values = parsed[spec.label_key].numpy()
                if values.min() < 0:
                    raise UserError(f"{shard.uri}: record {seen + int(np.argmin(values))} has label {values.min()}; labels are 0..K-1")
                counts = np.bincount(values)
                labels = np.pad(labels, (0, max(0, len(counts) - len(labels))))
                labels[: len(counts)] += counts
                splits += np.bincount(self._split_of(keys, shard_set), minlength=3)
                seen += len(values)
        return {"splits": splits.tolist(), "labels": labels.tolist()}


@contextlib.contextmanager
def corrupt_shard_errors(where: str) -> Iterator[None]:
    """A read that fails inside tf.data (bad framing, checksum, parse) as one line naming the shard."""
    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    try:
        yield
    except tf.errors.OpError as exc:
        lines = [line for line in exc.message.splitlines() if line.strip()]
        reason = next((line.split("CorruptShard: ", 1)[1] for line in lines if "CorruptShard: " in line), lines[0] if lines else type(exc).__name__)
        reason = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", reason).strip()  # TensorFlow's function and op names say nothing here
        raise UserError(f"{where} is not readable TFRecord data ({reason[:200]}); replace or remove the shard") from None


def class_check(counts: np.ndarray, where: str, num_classes: int | None) -> int:
    """The number of classes, from per-label example counts: labels must be below data.num_classes, and without it
    every class 0..max must have an example (a gap means a stray label)."""
    highest = int(np.flatnonzero(counts)[-1]) if counts.any() else -1
    if num_classes is not None:
        if highest >= num_classes:
            raise UserError(f"{where}: label {highest} is out of range 0..{num_classes - 1}; fix the label or set data.num_classes")
        return num_classes
    empty = np.flatnonzero(counts[: highest + 1] == 0)
    if empty.size:
        raise UserError(
            f"{where}: class {int(empty[0])} has no example although label {highest} exists; fix the stray label, or "
            f"declare data.num_classes: {highest + 1} if the class is real"
        )
    return highest + 1


class StreamingDataset:
    """The data-set interface every step uses (count, batches, head, sample, hash), over shards read as a stream."""

    def __init__(self, spec, digest: str):
        self.spec = spec
        self.source = spec.source
        self.reader = ShardReader(spec)
        self.sets = self.reader.shard_sets()
        for shard_set in {id(s): s for s in self.sets.values()}.values():
            self.reader.scan(shard_set)
        counts = self._label_counts()
        if self.reader.images:
            self.class_names = self.reader.class_names
            self.num_classes = class_check(counts, spec.path, spec.num_classes or len(self.class_names))
        else:
            self.num_classes = class_check(counts, spec.path, spec.num_classes)
            self.class_names = [str(c) for c in range(self.num_classes)]
        self.input_shape = self.reader.example_shape
        self.hash = digest
        if self.count("train") == 0 or self.count("test") == 0:
            raise UserError(f"{spec.path}: too few examples to split into train and test; add data or change data.split")

    def _label_counts(self) -> np.ndarray:
        counts = np.zeros(1, dtype=np.int64)
        for shard_set in {id(s): s for s in self.sets.values()}.values():
            for scan in shard_set.scans:
                labels = np.asarray(scan["labels"], dtype=np.int64)
                counts = np.pad(counts, (0, max(0, len(labels) - len(counts))))
                counts[: len(labels)] += labels
        return counts

    def count(self, split: str) -> int:
        return self.sets[split].count(split)

    def describe(self) -> str:
        shard_sets = {id(s): s for s in self.sets.values()}.values()
        files = sum(len(s.shards) for s in shard_sets)
        return (
            f"{self.source} (streamed from {files} files): {self.count('train')} train / {self.count('val')} val / "
            f"{self.count('test')} test, input {self.input_shape}, {self.num_classes} classes"
        )

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0, shard: tuple[int, int] | None = None):
        """A tf.data pipeline of (inputs, labels) batches of one split. `shard` (index, count): this worker's files
        (file-level sharding: each worker reads only its own shards)."""
        from modelpress.common.tf import import_tf

        tf, _ = import_tf()
        shard_set = self.sets[split]
        wanted = SPLITS.index(split)
        chosen = [s for s, scan in zip(shard_set.shards, shard_set.scans, strict=True) if self._holds(shard_set, scan, wanted)]
        if shard is not None:
            index, workers = shard
            if len(chosen) >= workers:
                mine = chosen[index::workers]
                log(f"{split}: worker {index} of {workers} reads {len(mine)} of {len(chosen)} shards: {', '.join(s.name for s in mine)}")
                chosen = mine
            elif split == "train":
                raise UserError(
                    f"{shard_set.path}: {len(chosen)} training shard(s) for {workers} workers, each of which reads its own; "
                    "write the data in at least as many files as train.workers"
                )  # a smaller validation split is read whole by every worker: its metric is still the split's
        streaming = self.spec.streaming
        records = self.reader.records(shard_set, chosen, streaming.parallel_reads if streaming else 4, seed if shuffle else None)
        if shard_set.split is None:
            records = records.filter(lambda key, payload, label: tf.equal(split_ids(key, self.reader.split_rule), wanted))
        if shuffle:
            buffer = streaming.shuffle_buffer if streaming else 10_000
            records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        batches = self.reader.decoded_batches(records, batch_size).prefetch(streaming.prefetch_batches if streaming else 2)
        options = tf.data.Options()
        options.autotune.enabled = False  # every buffer and thread count above is fixed: memory does not follow the data's size
        return batches.with_options(options)

    @staticmethod
    def _holds(shard_set: ShardSet, scan: dict, wanted: int) -> bool:
        return shard_set.split is not None or scan["splits"][wanted] > 0

    def head(self, split: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The split's first `rows` examples (fewer if it is smaller), in its fixed order."""
        with self.errors():
            x, y = next(iter(self.batches(split, rows)))
        return x.numpy(), y.numpy()

    def sample(self, split: str, rows: int, seed: int) -> np.ndarray:
        """A reproducible sample drawn while streaming: shards in a seeded order through a seeded shuffle buffer."""
        with self.errors():
            x, _ = next(iter(self.batches(split, rows, shuffle=True, seed=seed)))
        return x.numpy()

    def errors(self):
        return read_errors(self.reader, self.sets)


@contextlib.contextmanager
def read_errors(reader: ShardReader, sets: dict[str, ShardSet]) -> Iterator[None]:
    """Failures while streaming (a damaged shard, an unreadable image) as one line naming the file."""
    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    try:
        yield
    except tf.errors.OpError:
        if reader.images:
            raise UserError(f"{_unreadable_image(reader, sets)} is not a readable image; remove or replace it") from None
        with corrupt_shard_errors(reader.spec.path):
            raise


def _unreadable_image(reader: ShardReader, sets: dict[str, ShardSet]) -> str:
    """Which image failed: decode each file of the data set until one does (only after a failure, so the fast path
    stays fast)."""
    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    for shard_set in {id(s): s for s in sets.values()}.values():
        for shard in shard_set.shards:
            try:
                tf.io.decode_image(shard_io.read_object(shard.uri), expand_animations=False)
            except (tf.errors.OpError, UserError):
                return shard.uri
    log("the failing image could not be found again; the error may be transient")
    return reader.spec.path
