"""Streamed data on tiny shards of the real digits, local and on the S3 endpoint: the same splits as the in-memory
path, training to the same accuracy, a digest from the listing, one clear line for a damaged shard."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import TypeAdapter

from modelpress.common.errors import UserError
from modelpress.contract.data_sources import DataSpec
from modelpress.io import storage
from modelpress.io.data import load_dataset, source_digest
from modelpress.io.shards import write_tfrecord_shard
from modelpress.io.streaming import SPLITS

SHARDS = 6


@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPRESS_CACHE", str(tmp_path / "cache"))


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images * 16).clip(0, 255).astype(np.uint8)[..., None], bunch.target


def write_digits_shards(root: str, shards: int = SHARDS, rows: slice = slice(None)) -> None:
    images, labels = digits_uint8()
    images, labels = images[rows], labels[rows]
    for number in range(shards):
        write_tfrecord_shard(storage.join(root, f"part-{number:03d}.tfrecord"), images[number::shards], labels[number::shards])


def tfrecord(path: str, **values):
    return TypeAdapter(DataSpec).validate_python({"source": "tfrecord", "path": path, "shape": [8, 8, 1], **values})


def rows_of(data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's examples as sorted rows (label first), whatever order they were read in."""
    parts = [(x.numpy().reshape(len(x), -1), y.numpy()) for x, y in data.batches(split, 256)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    table = np.column_stack([y, x])
    return table[np.lexsort(table.T[::-1])], y


@pytest.fixture(params=["local", "s3"])
def shard_root(request, tmp_path):
    root = f"s3://{request.getfixturevalue('s3')}/digits" if request.param == "s3" else str(tmp_path / "shards")
    write_digits_shards(root)
    return root


def test_streamed_and_in_memory_reads_give_the_same_key_hash_splits(shard_root):
    streamed = load_dataset(tfrecord(f"{shard_root}/part-*.tfrecord", streaming={"shuffle_buffer": 64}))
    in_memory = load_dataset(tfrecord(f"{shard_root}/part-*.tfrecord", split={"by": "key_hash"}))
    assert streamed.describe().startswith(f"tfrecord (streamed from {SHARDS} files): ")
    assert sum(streamed.count(split) for split in SPLITS) == 1797
    for split in SPLITS:
        assert streamed.count(split) == in_memory.count(split)
        assert np.array_equal(rows_of(streamed, split)[0], rows_of(in_memory, split)[0])
    assert abs(streamed.count("test") - 0.2 * 1797) < 40 and streamed.num_classes == 10
    # The lineage records the digest the orchestrators' cache keys use: the listing plus the spec.
    assert streamed.hash == source_digest(streamed.spec)


def test_a_record_keeps_its_split_when_data_is_added(tmp_path):
    root = tmp_path / "shards"
    write_digits_shards(str(root), rows=slice(0, 1200))
    before = load_dataset(tfrecord(str(root), streaming={}))
    images, labels = digits_uint8()
    write_tfrecord_shard(str(root / "part-100.tfrecord"), images[1200:], labels[1200:])
    after = load_dataset(tfrecord(str(root), streaming={}))
    assert after.count("test") > before.count("test") and after.hash != before.hash
    old, new = rows_of(before, "test")[0], rows_of(after, "test")[0]
    assert {row.tobytes() for row in old} <= {row.tobytes() for row in new}


def test_streamed_training_reaches_the_in_memory_accuracy(tmp_path):
    from modelpress.common.tf import import_tf
    from modelpress.contract.training import TrainSpec
    from modelpress.ml.training import fit, test_accuracy

    _, keras = import_tf()
    write_digits_shards(str(tmp_path / "shards"))
    train = TrainSpec(epochs=6, batch_size=64, learning_rate=0.01, seed=0)
    accuracies = []
    for values in ({"streaming": {"shuffle_buffer": 256}}, {"split": {"by": "key_hash"}}):
        data = load_dataset(tfrecord(str(tmp_path / "shards"), **values))
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        fit(model, data, train)
        accuracies.append(test_accuracy(model, data))
    streamed, in_memory = accuracies
    assert streamed > 0.88 and abs(streamed - in_memory) < 0.03


def test_test_path_shards_are_the_test_set(tmp_path):
    write_digits_shards(str(tmp_path / "train"), shards=4, rows=slice(0, 1500))
    images, labels = digits_uint8()
    write_tfrecord_shard(str(tmp_path / "test" / "held-out.tfrecord"), images[1500:], labels[1500:])
    data = load_dataset(tfrecord(str(tmp_path / "train"), test_path=str(tmp_path / "test"), streaming={}))
    assert data.count("test") == 297 and data.count("train") + data.count("val") == 1500
    x, y = data.head("test", 5)
    assert np.array_equal(y, labels[1500:1505]) and np.allclose(x, images[1500:1505] / 255.0)


def flip_a_byte(uri: str) -> None:
    raw = bytearray(storage.read_bytes(uri))
    raw[len(raw) // 2] ^= 0xFF
    storage.write_bytes(uri, bytes(raw))


def test_a_damaged_shard_is_one_line_naming_it(shard_root):
    damaged = storage.join(shard_root, "part-003.tfrecord")
    flip_a_byte(damaged)
    with pytest.raises(UserError) as caught:
        load_dataset(tfrecord(shard_root, streaming={}))
    message = str(caught.value)
    assert message.startswith(f"{damaged} is not readable TFRecord data (") and message.endswith("; replace or remove the shard")
    assert re.search(r"(corrupted record at \d+|record at byte \d+: the data checksum does not match)", message)
    assert "\n" not in message


def test_a_truncated_s3_shard_is_named(s3):
    root = f"s3://{s3}/digits"
    write_digits_shards(root)
    shard = f"{root}/part-001.tfrecord"
    storage.write_bytes(shard, storage.read_bytes(shard)[:-7])
    with pytest.raises(UserError, match=r"part-001.tfrecord is not readable TFRecord data \(ends inside a record"):
        load_dataset(tfrecord(root, streaming={}))


def test_streamed_image_folder_and_an_unreadable_image(tmp_path):
    from PIL import Image

    images, labels = digits_uint8()
    for index in range(120):
        folder = tmp_path / "images" / f"digit{labels[index]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index, ..., 0]).save(folder / f"{index:04d}.png")
    spec = TypeAdapter(DataSpec).validate_python(
        {"source": "image_folder", "path": str(tmp_path / "images"), "image_size": [8, 8], "image_channels": 1, "streaming": {}}
    )
    data = load_dataset(spec)
    assert data.class_names == [f"digit{c}" for c in range(10)] and data.input_shape == (8, 8, 1)
    assert sum(data.count(split) for split in SPLITS) == 120
    x, y = next(iter(data.batches("train", 500)))
    assert x.shape == (data.count("train"), 8, 8, 1) and float(x.numpy().max()) <= 1.0
    broken = tmp_path / "images" / "digit3" / "broken.png"
    broken.write_bytes(b"not a png")
    data = load_dataset(spec)
    with pytest.raises(UserError, match=f"{broken} is not a readable image; remove or replace it"), data.errors():
        for split in SPLITS:  # every step reads inside data.errors()
            rows_of(data, split)
    with pytest.raises(UserError, match=f"{broken} is not a readable image"):
        load_dataset(spec.model_copy(update={"streaming": None}))


def test_a_stratified_split_cannot_stream():
    with pytest.raises(ValueError, match="use split.by key_hash"):
        tfrecord("shards/", streaming={}, split={"by": "stratified"})
    with pytest.raises(ValueError, match="use it with tfrecord or image_folder"):
        TypeAdapter(DataSpec).validate_python({"source": "digits", "split": {"by": "key_hash"}})


def test_calibration_sample_drawn_while_streaming_is_reproducible(tmp_path):
    from modelpress.io.data import calibration_subset

    write_digits_shards(str(tmp_path / "shards"))
    data = load_dataset(tfrecord(str(tmp_path / "shards"), streaming={"shuffle_buffer": 300}))
    first, first_digest = calibration_subset(data, 64, seed=0)
    again, again_digest = calibration_subset(load_dataset(data.spec), 64, seed=0)
    other, other_digest = calibration_subset(data, 64, seed=1)
    assert first.shape == (64, 8, 8, 1) and np.array_equal(first, again) and first_digest == again_digest
    assert other_digest != first_digest
    train_rows = {row.tobytes() for row in rows_of(data, "train")[0][:, 1:].astype(np.float32)}
    assert {row.tobytes() for row in first.reshape(64, -1)} <= train_rows  # drawn from the training split only
