"""Data loaders on real data (digits, optdigits) and on files the tests write (csv, npz, TFRecord, image folders)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter

from modelpress.common.errors import UserError
from modelpress.contract.data_sources import DataSpec
from modelpress.io import storage
from modelpress.io.data import calibration_subset, load_dataset, source_digest


def spec(**values):
    return TypeAdapter(DataSpec).validate_python(values)


def test_digits_split_is_stratified_seeded_and_scaled():
    data = load_dataset(spec(source="digits"))
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert abs(len(data.x_test) - 0.2 * 1797) <= 10
    assert set(np.unique(data.y_test)) == set(range(10))
    assert load_dataset(spec(source="digits")).hash == data.hash
    assert load_dataset(spec(source="digits", split={"seed": 1})).hash != data.hash


def test_optdigits_keeps_the_writer_disjoint_test_set():
    data = load_dataset(spec(source="optdigits"))
    assert len(data.x_train) + len(data.x_val) == 3823
    assert len(data.x_test) == 1797
    assert data.input_shape == (8, 8, 1)


def test_generated_is_deterministic_and_learnable():
    from sklearn.linear_model import LogisticRegression

    values = dict(source="generated", samples=600, image_size=(12, 12), image_channels=1, classes=4, seed=3)
    data = load_dataset(spec(**values))
    assert data.input_shape == (12, 12, 1) and data.num_classes == 4
    assert load_dataset(spec(**values)).hash == data.hash
    assert load_dataset(spec(**{**values, "seed": 4})).hash != data.hash
    model = LogisticRegression(max_iter=500).fit(data.x_train.reshape(len(data.x_train), -1), data.y_train)
    accuracy = model.score(data.x_test.reshape(len(data.x_test), -1), data.y_test)
    assert accuracy > 0.6  # chance is 0.25


def test_generated_noise_makes_the_same_classes_harder_to_tell_apart():
    from sklearn.linear_model import LogisticRegression

    def accuracy(noise: float) -> float:
        values = dict(source="generated", samples=1000, image_size=(12, 12), image_channels=1, classes=8, seed=3, noise=noise)
        data = load_dataset(spec(**values))
        model = LogisticRegression(max_iter=1000).fit(data.x_train.reshape(len(data.x_train), -1), data.y_train)
        return model.score(data.x_test.reshape(len(data.x_test), -1), data.y_test)

    clean, noisy = accuracy(0.6), accuracy(4.0)
    assert clean > 0.9 and 1 / 8 < noisy < clean - 0.2
    with pytest.raises(ValueError, match="noise"):
        spec(source="generated", noise=-1.0)


def test_resize_and_channels_for_mobilenet_sized_inputs():
    data = load_dataset(spec(source="digits", resize=(32, 32), channels=3))
    assert data.input_shape == (32, 32, 3)


def test_calibration_subset_is_reproducible():
    data = load_dataset(spec(source="digits"))
    first, first_hash = calibration_subset(data, 50, seed=0)
    again, again_hash = calibration_subset(data, 50, seed=0)
    other, other_hash = calibration_subset(data, 50, seed=1)
    assert first.shape == (50, 8, 8, 1) and first_hash == again_hash and np.array_equal(first, again)
    assert other_hash != first_hash


def write_csv(path, rows, header="a,b,c,label"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return str(path)


def table(n=60):
    rng = np.random.default_rng(0)
    return [[*np.round(rng.random(3), 3), i % 3] for i in range(n)]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_csv_local_and_s3(tmp_path, where, request):
    path = write_csv(tmp_path / "d.csv", table())
    uri = path
    if where == "s3":
        bucket = request.getfixturevalue("s3")
        uri = f"s3://{bucket}/data/d.csv"
        storage.write_bytes(uri, (tmp_path / "d.csv").read_bytes())
    data = load_dataset(spec(source="csv", path=uri))
    assert data.input_shape == (3,) and data.num_classes == 3
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 60


def test_csv_text_labels_become_sorted_classes(tmp_path):
    rows = [[1, 2, 3, ["cat", "dog", "emu"][i % 3]] for i in range(30)]
    data = load_dataset(spec(source="csv", path=write_csv(tmp_path / "t.csv", rows)))
    assert data.class_names == ["cat", "dog", "emu"]


def test_csv_reshape_to_images(tmp_path):
    rows = [[*range(4), i % 2] for i in range(20)]
    path = write_csv(tmp_path / "i.csv", rows, header="p0,p1,p2,p3,label")
    data = load_dataset(spec(source="csv", path=path, shape=[2, 2, 1], scale=4))
    assert data.input_shape == (2, 2, 1) and data.x_train.max() <= 1.0


def test_npz_with_fixed_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.random((50, 4, 4, 1)), y=np.arange(50) % 5, x_test=rng.random((10, 4, 4, 1)), y_test=np.arange(10) % 5)
    data = load_dataset(spec(source="npz", path=str(path)))
    assert len(data.x_test) == 10 and len(data.x_train) + len(data.x_val) == 50 and data.num_classes == 5


def test_tfrecord(tmp_path):
    from modelpress.common.tf import import_tf

    tf, _ = import_tf()
    path = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(40):
            image = np.full((4, 4, 1), i * 5, dtype=np.uint8)
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                    }
                )
            )
            writer.write(example.SerializeToString())
    data = load_dataset(spec(source="tfrecord", path=str(path), shape=[4, 4, 1]))
    assert data.input_shape == (4, 4, 1) and data.num_classes == 2
    assert data.x_train.max() <= 1.0
    with pytest.raises(UserError, match="fix data.shape"):
        load_dataset(spec(source="tfrecord", path=str(path), shape=[5, 5, 1]))


def test_image_folder(tmp_path):
    from PIL import Image

    for name, shade in (("dark", 20), ("light", 230)):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(np.full((10, 10, 3), shade + i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_dataset(spec(source="image_folder", path=str(tmp_path), image_size=(8, 8)))
    assert data.input_shape == (8, 8, 3) and data.class_names == ["dark", "light"]
    (tmp_path / "light" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="not a readable image"):
        load_dataset(spec(source="image_folder", path=str(tmp_path), image_size=(8, 8)))


@pytest.mark.parametrize(
    "rows, values, message",
    [
        ([], {}, "no data rows"),
        ([[1, 2, "nan", 0], [1, 2, 3, 1]] * 10, {}, "NaN or infinite"),
        ([[1, 2, 3, 7]] + [[1, 2, 3, i % 2] for i in range(20)], {"num_classes": 2}, "label 7 (row 0) is out of range 0..1"),
        ([[1, 2, 3, -1]] + [[1, 2, 3, 1]] * 20, {}, "out of range"),
        ([[1, "x", 3, 0]] * 5, {}, "line 2: a feature is not a number"),
        ([[1, 2, 3, 0]] * 5, {"label_column": "target"}, "no column 'target'"),
    ],
)
def test_bad_csv_data_is_one_clear_line(tmp_path, rows, values, message):
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(UserError) as caught:
        load_dataset(spec(source="csv", path=path, **values))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_and_missing_npz_key(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_dataset(spec(source="csv", path=str(tmp_path / "absent.csv")))
    np.savez(tmp_path / "d.npz", features=np.zeros((5, 2)), y=np.zeros(5))
    with pytest.raises(UserError, match="has no array 'x'"):
        load_dataset(spec(source="npz", path=str(tmp_path / "d.npz")))


def test_source_digest_of_a_local_file_follows_its_content(tmp_path):
    rows = table()
    path = write_csv(tmp_path / "d.csv", rows)
    first = source_digest(spec(source="csv", path=path))
    write_csv(tmp_path / "d.csv", rows)  # rewritten, same bytes
    assert source_digest(spec(source="csv", path=path)) == first
    rows[7][0] += 1  # one value of one row
    write_csv(tmp_path / "d.csv", rows)
    assert source_digest(spec(source="csv", path=path)) != first
    assert source_digest(spec(source="csv", path=path, label_column="c")) != source_digest(spec(source="csv", path=path))


def test_source_digest_of_a_folder_covers_every_file_and_its_name(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "records" / name).mkdir(parents=True)
        (tmp_path / "records" / name / "x.png").write_bytes(name.encode() * 10)
    folder = spec(source="image_folder", path=str(tmp_path / "records"))
    first = source_digest(folder)
    (tmp_path / "records" / "b" / "x.png").write_bytes(b"changed")
    changed = source_digest(folder)
    (tmp_path / "records" / "b" / "x.png").rename(tmp_path / "records" / "b" / "y.png")
    assert len({first, changed, source_digest(folder)}) == 3


def test_source_digest_of_an_s3_prefix_follows_its_listing(s3):
    prefix = f"s3://{s3}/data"
    storage.write_bytes(f"{prefix}/part-0.csv", b"a,label\n1,0\n")
    storage.write_bytes(f"{prefix}/part-1.csv", b"a,label\n2,1\n")
    storage.write_bytes(f"s3://{s3}/data-old/part-0.csv", b"a,label\n9,9\n")  # shares the prefix's text, not its folder
    data = spec(source="tfrecord", path=prefix, shape=[1])
    first = source_digest(data)
    storage.write_bytes(f"s3://{s3}/data-old/part-0.csv", b"other")
    storage.write_bytes(f"{prefix}/part-1.csv", b"a,label\n2,1\n")  # rewritten with the same bytes: same ETag and size
    assert source_digest(data) == first
    storage.write_bytes(f"{prefix}/part-1.csv", b"a,label\n3,1\n")
    assert source_digest(data) != first
    single = spec(source="csv", path=f"{prefix}/part-0.csv")
    assert source_digest(single) != source_digest(spec(source="csv", path=f"{prefix}/part-1.csv"))


def test_source_digest_of_bundled_sets_is_fixed_per_spec_without_loading(tmp_path):
    assert source_digest(spec(source="digits")) == source_digest(spec(source="digits"))
    assert source_digest(spec(source="generated", seed=1)) != source_digest(spec(source="generated", seed=2))
    assert source_digest(spec(source="optdigits")) != source_digest(spec(source="digits"))


def test_source_digest_of_missing_data_is_one_line(tmp_path, s3):
    with pytest.raises(UserError, match="does not exist"):
        source_digest(spec(source="csv", path=str(tmp_path / "nowhere.csv")))
    with pytest.raises(UserError, match="holds no objects"):
        source_digest(spec(source="csv", path=f"s3://{s3}/nowhere.csv"))
