"""Data loading for every source in the spec, local or s3://, split reproducibly, checked before any training.

Images come out as float32 NHWC in [0, 1] (tabular rows as float32 vectors), labels as int64 0..K-1.

The data contract, checked for what the data means and not only what it parses to: paired arrays come together
(an `x_test` without its `y_test` is an error, never a silent re-split), features and labels have equal lengths,
every label is one of the declared classes (the test split cannot add a class; a class with no training example
is an error unless `data.num_classes` declares it), no NaN or infinite value, one example shape throughout.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelpress import __version__
from modelpress.common.errors import UserError
from modelpress.contract.data_sources import (
    CsvData,
    DigitsData,
    GeneratedData,
    ImageFolderData,
    NpzData,
    OptdigitsData,
    TfrecordData,
)
from modelpress.io import storage
from modelpress.io.shards import list_shards, listing_digest
from modelpress.io.streaming import SPLITS, ShardReader, StreamingDataset, class_check, read_errors, split_ids

SHIPPED_OPTDIGITS = Path(__file__).parent / "datasets" / "optdigits"


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @functools.cached_property
    def hash(self) -> str:
        """sha256 over every split's values and shapes: the data a model saw, recorded in its lineage."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def describe(self) -> str:
        return (
            f"{self.source}: {len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} test, "
            f"input {self.input_shape}, {self.num_classes} classes"
        )

    # The interface streamed data sets share (io.streaming.StreamingDataset): what every step reads data through.
    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val), "test": (self.x_test, self.y_test)}[split]

    def count(self, split: str) -> int:
        return len(self.arrays(split)[1])

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0, shard: tuple[int, int] | None = None):
        """A tf.data pipeline of (inputs, labels) batches of one split. `shard` (index, count): this worker's examples."""
        from modelpress.common.tf import import_tf

        tf, _ = import_tf()
        x, y = self.arrays(split)
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        if shard is not None:
            dataset = dataset.shard(shard[1], shard[0])
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(2)

    def head(self, split: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.arrays(split)
        return x[:rows], y[:rows]

    def sample(self, split: str, rows: int, seed: int) -> np.ndarray:
        x = self.arrays(split)[0]
        index = np.sort(np.random.default_rng(seed).choice(len(x), size=min(rows, len(x)), replace=False))
        return x[index]

    def errors(self):
        return contextlib.nullcontext()


def calibration_subset(dataset, size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """A reproducible sample of training inputs for INT8 calibration (drawn while streaming for streamed data), and
    its sha256 for the lineage."""
    sample = np.ascontiguousarray(dataset.sample("train", size, seed))
    return sample, hashlib.sha256(sample.tobytes() + str(sample.shape).encode()).hexdigest()


def load_dataset(spec) -> Dataset | StreamingDataset:
    """The data a spec names: streamed when data.streaming is set, else read into memory (cached per process by the
    spec and the files' modification stamps)."""
    if getattr(spec, "streaming", None) is not None:
        return StreamingDataset(spec, source_digest(spec))
    return _load_cached(spec.model_dump_json(), _fingerprint(spec))


def source_digest(spec) -> str:
    """sha256 naming the data a spec reads, without loading it: what an orchestrator's cache key and a model's
    lineage must see, so that new data at the same path retrains. Local files: their contents, by relative path;
    s3://: the listing (keys, sizes, ETags; nothing downloaded); bundled and generated sets: this ModelPress
    version. The spec itself is part of it (the same files read or split another way are other data)."""
    digest = hashlib.sha256(spec.model_dump_json().encode())
    paths = _paths(spec)
    if not paths:
        digest.update(f"bundled with modelpress {__version__}".encode())
    for role, path in paths:
        for shard in list_shards(path):
            version = shard.version if storage.is_s3(path) else _content_digest(shard.uri, shard.size, shard.version)
            digest.update(f"{role}\0{shard.name}\0{shard.size}\0{version}\n".encode())
    return digest.hexdigest()


def _paths(spec) -> list[tuple[str, str]]:
    return [(role, path) for role in ("path", "test_path", "val_path") if (path := getattr(spec, role, None))]


@functools.lru_cache(maxsize=4096)
def _content_digest(path: str, size: int, modified: str) -> str:
    """A local file's sha256; per process, a file whose size and modification time did not change is not re-read."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fingerprint(spec) -> str:
    """Changes when local files change; s3:// data is read every time (no cheap stamp for a whole prefix)."""
    paths = _paths(spec)
    if any(storage.is_s3(path) for _, path in paths):
        return uuid.uuid4().hex
    try:
        return listing_digest([shard for _, path in paths for shard in list_shards(path)])
    except UserError:  # missing data: not cached, so the loader says what is missing in its own words
        return uuid.uuid4().hex


@functools.lru_cache(maxsize=4)
def _load_cached(spec_json: str, fingerprint: str) -> Dataset:
    from pydantic import TypeAdapter

    from modelpress.contract.data_sources import DataSpec

    spec = TypeAdapter(DataSpec).validate_json(spec_json)
    loader = {
        "digits": _digits,
        "optdigits": _optdigits,
        "generated": _generated,
        "csv": _csv,
        "npz": _npz,
        "tfrecord": _sharded,
        "image_folder": _sharded,
    }[spec.source]
    dataset = loader(spec)
    dataset = _reshape_images(dataset, spec.resize, spec.channels)
    _check(dataset, spec)
    for array in (dataset.x_train, dataset.x_val, dataset.x_test, dataset.y_train, dataset.y_val, dataset.y_test):
        array.setflags(write=False)
    return dataset


# ------------------------------------------------------------------------------------------------------- sources
def _digits(spec: DigitsData) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    return _split(x, bunch.target.astype(np.int64), spec, "digits", [str(c) for c in range(10)])


def _optdigits(spec: OptdigitsData) -> Dataset:
    folder = spec.path or str(SHIPPED_OPTDIGITS)

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = _read_csv_rows(storage.join(folder, name))
        values = np.asarray([[float(v) for v in row] for row in rows[1:]], dtype=np.float32)
        return (values[:, :64] / 16.0).reshape(-1, 8, 8, 1), values[:, 64].astype(np.int64)

    x_train, y_train = read("optdigits.tra")
    x_test, y_test = read("optdigits.tes")
    return _split(x_train, y_train, spec, "optdigits", [str(c) for c in range(10)], test=(x_test, y_test))


GENERATED_BLOCK = 512  # examples drawn from one seeded generator: any range of the set is made without the rest


def _generated(spec: GeneratedData) -> Dataset:
    images, labels = generated_examples(spec, 0, spec.samples)
    return _split(images, labels, spec, "generated", [f"class_{c}" for c in range(spec.classes)])


def generated_examples(spec: GeneratedData, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples [start, stop) of the generated set, as float32 images in (0, 1) and int64 labels.

    Each class is a smooth random template; examples are shifted, scaled and noisy copies of it: learnable (a small
    CNN separates the classes) but not trivial, at any size, shape and seed. Blocks of GENERATED_BLOCK examples have
    their own seeded generator, so a benchmark writes shards of a set far larger than memory block by block.
    """
    height, width = spec.image_size
    coarse = np.random.default_rng(spec.seed).normal(size=(spec.classes, 4, 4, spec.image_channels)).astype(np.float32)
    templates = np.stack([_upsample(c, height, width) for c in coarse])
    first, last = start // GENERATED_BLOCK, -(-stop // GENERATED_BLOCK)
    images, labels = [], []
    rows, cols = np.arange(height), np.arange(width)
    for block in range(first, last):
        rng = np.random.default_rng([spec.seed, block])
        block_labels = rng.integers(0, spec.classes, size=GENERATED_BLOCK).astype(np.int64)
        shifts = rng.integers(-max(1, height // 8), max(1, height // 8) + 1, size=(GENERATED_BLOCK, 2))
        gains = rng.uniform(0.7, 1.3, size=GENERATED_BLOCK).astype(np.float32)
        # Each template rolled by its example's shift (one gather for the block), scaled and made noisy.
        shifted_rows = (rows[None, :] - shifts[:, :1]) % height
        shifted_cols = (cols[None, :] - shifts[:, 1:]) % width
        block_images = templates[block_labels[:, None, None], shifted_rows[:, :, None], shifted_cols[:, None, :]]
        block_images *= gains[:, None, None, None]
        block_images += rng.standard_normal(size=block_images.shape, dtype=np.float32) * np.float32(spec.noise)
        images.append(1.0 / (1.0 + np.exp(-block_images)))  # squash to (0, 1) like pixel intensities
        labels.append(block_labels)
    offset = first * GENERATED_BLOCK
    return np.concatenate(images)[start - offset : stop - offset], np.concatenate(labels)[start - offset : stop - offset]


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.interp(np.linspace(0, grid.shape[0] - 1, height), np.arange(grid.shape[0]), np.arange(grid.shape[0]))
    cols = np.interp(np.linspace(0, grid.shape[1] - 1, width), np.arange(grid.shape[1]), np.arange(grid.shape[1]))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, grid.shape[0] - 1), np.minimum(c0 + 1, grid.shape[1] - 1)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c1] * fc
    bottom = grid[r1][:, c0] * (1 - fc) + grid[r1][:, c1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def _read_csv_rows(uri: str) -> list[list[str]]:
    text = storage.read_bytes(uri).decode("utf-8-sig")
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < 2:
        raise UserError(f"{uri} has no data rows; it needs a header row and at least one example")
    return rows


def _csv(spec: CsvData) -> Dataset:
    rows = _read_csv_rows(spec.path)
    header = rows[0]
    if spec.label_column not in header:
        raise UserError(
            f"{spec.path}: no column '{spec.label_column}' (columns: {', '.join(header[:8])}...); set data.label_column"
        )
    label_at = header.index(spec.label_column)
    features, labels = [], []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{spec.path} line {number}: {len(row)} values for {len(header)} columns; fix the row")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError:
            raise UserError(f"{spec.path} line {number}: a feature is not a number; fix or drop the row") from None
        labels.append(row[label_at])
    x = np.asarray(features, dtype=np.float32) / np.float32(spec.scale)
    if spec.shape:
        if int(np.prod(spec.shape)) != x.shape[1]:
            raise UserError(f"{spec.path}: data.shape {spec.shape} holds {int(np.prod(spec.shape))} values, rows have {x.shape[1]}")
        x = x.reshape(-1, *spec.shape)
    y, names = _labels(labels, spec.path, spec.num_classes)
    return _split(x, y, spec, "csv", names)


def _npz(spec: NpzData) -> Dataset:
    try:
        archive = np.load(io.BytesIO(storage.read_bytes(spec.path)), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{spec.path} is not a readable .npz file ({_first_line(exc)}); write it with numpy.savez") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{spec.path} holds a single array, not an .npz archive; write it with numpy.savez(x=..., y=...)")
    with archive:
        for key in (spec.x_key, spec.y_key):
            if key not in archive.files:
                raise UserError(f"{spec.path} has no array '{key}' (arrays: {', '.join(archive.files)}); set data.x_key/y_key")
        x_test_key, y_test_key = f"{spec.x_key}_test", f"{spec.y_key}_test"
        present = [key for key in (x_test_key, y_test_key) if key in archive.files]
        if len(present) == 1:
            missing = ({x_test_key, y_test_key} - set(present)).pop()
            raise UserError(
                f"{spec.path} has '{present[0]}' but no '{missing}'; a fixed test split needs both (or neither, to split "
                "the training arrays)"
            )
        x = _features(_npz_array(archive, spec.x_key, spec.path), spec.x_key, spec)
        y, names = _labels(_label_array(archive, spec.y_key, spec.path), spec.path, spec.num_classes)
        _same_length(x, y, spec.path, spec.x_key, spec.y_key)
        test = None
        if present:
            x_test = _features(_npz_array(archive, x_test_key, spec.path), x_test_key, spec)
            y_test, _ = _labels(_label_array(archive, y_test_key, spec.path), spec.path, len(names), names)
            _same_length(x_test, y_test, spec.path, x_test_key, y_test_key)
            test = (x_test, y_test)
    return _split(x, y, spec, "npz", names, test=test)


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def _npz_array(archive, key: str, where: str) -> np.ndarray:
    """One array of an archive, read only now (npz is lazy): object arrays, truncated members and other damage are
    one line."""
    try:
        array = archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{where}: array '{key}' is unreadable ({_first_line(exc)}); save plain numeric arrays with numpy.savez") from None
    if not isinstance(array, np.ndarray):  # a member without the .npy header comes back as its raw bytes
        raise UserError(f"{where}: member '{key}' is not a numpy array; save the arrays with numpy.savez")
    if array.dtype.kind not in "biuf":
        raise UserError(f"{where}: array '{key}' holds {array.dtype} values; features and labels must be numbers")
    return array


def _label_array(archive, key: str, where: str) -> list:
    array = _npz_array(archive, key, where)
    if array.ndim != 1:
        raise UserError(f"{where}: array '{key}' has shape {array.shape}; labels must be one class per example, shape (N,)")
    return array.tolist()


def _features(array: np.ndarray, key: str, spec) -> np.ndarray:
    if array.ndim < 2:
        raise UserError(f"{spec.path}: array '{key}' has shape {array.shape}; features need one row per example, e.g. (N, 64)")
    return array.astype(np.float32) / np.float32(spec.scale)


def _same_length(x: np.ndarray, y: np.ndarray, where: str, x_name: str, y_name: str) -> None:
    if len(x) != len(y):
        raise UserError(f"{where}: '{x_name}' has {len(x)} examples but '{y_name}' {len(y)} labels; they must pair up one to one")


def _sharded(spec: TfrecordData | ImageFolderData) -> Dataset:
    """TFRecord shards or an image folder read whole, through the streaming reader (so both give the same examples,
    keys and, with split.by key_hash or test_path/val_path, the same splits)."""
    reader = ShardReader(spec)
    sets = reader.shard_sets()
    distinct = {id(s): s for s in sets.values()}
    read = {}
    with read_errors(reader, sets):
        for number, shard_set in distinct.items():
            reader.scan(shard_set)
            parts = list(reader.decoded_batches(reader.records(shard_set, shard_set.shards, 1), 1024, keys=True))
            read[number] = tuple(np.concatenate([part[i].numpy() for part in parts]) for i in range(3))
    counts = np.zeros(1, dtype=np.int64)
    for _, y, _ in read.values():
        counts = np.pad(counts, (0, max(0, int(y.max()) + 1 - len(counts))))
        counts[: int(y.max()) + 1] += np.bincount(y)
    if reader.images:
        names = reader.class_names
        class_check(counts, spec.path, spec.num_classes or len(names))
    else:
        names = [str(c) for c in range(class_check(counts, spec.path, spec.num_classes))]
    if spec.split.by != "key_hash" and not spec.test_path and not spec.val_path:
        x, y, _ = read[id(sets["train"])]
        return _split(x, y, spec, spec.source, names)
    parts = {}
    for split in SPLITS:
        shard_set = sets[split]
        x, y, keys = read[id(shard_set)]
        if shard_set.split is None:
            chosen = split_ids(keys, reader.split_rule).numpy() == SPLITS.index(split)
            x, y = x[chosen], y[chosen]
        parts[split] = (x, y)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (parts[split] for split in SPLITS)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, len(names), names, spec.source)


# ------------------------------------------------------------------------------------------------------- helpers
def _labels(values: list, where: str, num_classes: int | None, names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Integer labels stay as they are (checked against num_classes); text labels map to sorted class indexes.

    `names`: the classes already known (the training split's), which a test split must keep to. Without a declared
    num_classes, every class 0..max must have an example: a gap means a stray label, not a class.
    """
    if not values:
        raise UserError(f"{where} holds no examples; point data.path at a file with data")
    try:
        floats = np.asarray(values, dtype=np.float64)
    except OverflowError:
        raise UserError(f"{where}: a label is a number too large to be a class; labels are 0..K-1") from None
    except ValueError:
        known = names or sorted({str(v) for v in values})
        stray = next((str(v) for v in values if str(v) not in known), None)
        if stray is not None:
            raise UserError(f"{where}: test label '{stray}' is not a class of the training data ({', '.join(known[:8])}); fix the label") from None
        return np.asarray([known.index(str(v)) for v in values], dtype=np.int64), known
    if np.isnan(floats).any():
        raise UserError(f"{where}: a label is NaN (row {int(np.argmax(np.isnan(floats)))}); every example needs a class")
    if not np.isfinite(floats).all() or (np.abs(floats) > 2**31).any():
        raise UserError(f"{where}: a label is a number too large to be a class; labels are 0..K-1")
    if (floats != np.round(floats)).any():
        raise UserError(f"{where}: labels must be whole class numbers 0..K-1 (found {floats[floats != np.round(floats)][0]})")
    labels = floats.astype(np.int64)
    bound = num_classes if num_classes is not None else int(labels.max()) + 1
    bad = np.flatnonzero((labels < 0) | (labels >= bound))
    if bad.size:
        raise UserError(
            f"{where}: label {labels[bad[0]]} (row {bad[0]}) is out of range 0..{bound - 1}; "
            "fix the label or set data.num_classes"
        )
    if num_classes is None:
        empty = sorted(set(range(bound)) - set(labels.tolist()))
        if empty:
            raise UserError(
                f"{where}: class {empty[0]} has no example although label {bound - 1} exists; fix the stray label, or "
                f"declare data.num_classes: {bound} if the class is real"
            )
    return labels, [str(c) for c in range(bound)]


def _split(x, y, spec, source: str, names: list[str], test: tuple | None = None) -> Dataset:
    """Stratified, seeded split: test (unless the source has a fixed test set), then val from what is left."""
    if len(x) == 0:
        raise UserError(f"the {source} data set is empty; point data.path at a file with examples")
    rng = np.random.default_rng(spec.split.seed)
    train_idx, val_idx, test_idx = [], [], []
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        n_test = 0 if test is not None else int(round(len(members) * spec.split.test))
        n_val = int(round(len(members) * spec.split.val))
        test_idx.append(members[:n_test])
        val_idx.append(members[n_test : n_test + n_val])
        train_idx.append(members[n_test + n_val :])
    train, val = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
    if test is None:
        order = np.sort(np.concatenate(test_idx))
        test = (x[order], y[order])
    if len(test[1]) and int(test[1].max()) >= len(names):
        raise UserError(f"the {source} test split has label {int(test[1].max())}, not a class of the training data (0..{len(names) - 1})")
    num_classes = len(names)
    return Dataset(x[train], y[train], x[val], y[val], test[0], test[1], num_classes, names, source)


def _reshape_images(dataset: Dataset, resize, channels) -> Dataset:
    if resize is None and channels is None:
        return dataset
    if len(dataset.input_shape) != 3:
        raise UserError(f"data.resize/channels apply to images (H, W, C); this data has shape {dataset.input_shape}")

    def convert(x: np.ndarray) -> np.ndarray:
        if resize is not None and tuple(x.shape[1:3]) != tuple(resize):
            from modelpress.common.tf import import_tf

            tf, _ = import_tf()

            x = np.concatenate(
                [tf.image.resize(x[i : i + 1024], resize).numpy() for i in range(0, len(x), 1024)] or [x]
            ).astype(np.float32)
        if channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        elif channels == 1 and x.shape[-1] == 3:
            x = x.mean(axis=-1, keepdims=True, dtype=np.float32)
        return x

    dataset.x_train, dataset.x_val, dataset.x_test = (convert(a) for a in (dataset.x_train, dataset.x_val, dataset.x_test))
    return dataset


def _check(dataset: Dataset, spec) -> None:
    where = getattr(spec, "path", None) or dataset.source
    if len(dataset.x_train) == 0 or len(dataset.x_test) == 0:
        raise UserError(f"{where}: too few examples to split into train and test; add data or change data.split")
    for name in ("x_train", "x_val", "x_test"):
        array = getattr(dataset, name)
        if not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise UserError(f"{where}: NaN or infinite value in {name.removeprefix('x_')} features (row {row}); clean the data")
    if dataset.x_test.shape[1:] != dataset.x_train.shape[1:]:
        raise UserError(f"{where}: test examples have shape {dataset.x_test.shape[1:]}, training ones {dataset.input_shape}")
