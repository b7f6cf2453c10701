"""Hypothesis fuzzes workflow YAML and data files: whatever the bytes, loading ends in a workflow/data set or in one
UserError, within a time bound; never another exception, a hang or a crash."""

from __future__ import annotations

import io
import signal
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpress.common.errors import UserError
from modelpress.contract.data_sources import CsvData, NpzData
from modelpress.execution.plan import load_workflow
from modelpress.io.data import load_dataset

pytestmark = pytest.mark.integration

VALID = "name: t\nmodel: {zoo: mlp, params: {hidden: [8]}}\ndata: {source: digits}\ntrain: {epochs: 1}\n"
SECONDS = 10
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def time_bound(seconds: int):
    def expire(*_):
        raise AssertionError(f"loading took more than {seconds}s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def accepts_or_refuses(load) -> None:
    with time_bound(SECONDS):
        try:
            load()
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)


yaml_scalars = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True), st.text(max_size=12), st.booleans(), st.none()
)
yaml_values = st.recursive(
    yaml_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20
)
SECTIONS = ("name", "model", "data", "train", "compress", "targets", "gates", "push", "serving", "schedule", "evaluation")


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS), yaml_values, max_size=6))
def test_structured_workflows(tmp_path, document):
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(VALID), **document}))
    accepts_or_refuses(lambda: load_workflow(path))


@FUZZ
@given(st.data())
def test_mutated_workflow_text(tmp_path, data):
    raw = bytearray(VALID.encode())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = data.draw(st.sampled_from([b"&a ", b"*a", b"[", b"]", b"{", b"}", b":", b"\n  ", b"\t", b"!!python/object ", b"\xff", b"9" * 30, b"- "]))
        if action == "insert":
            raw[at:at] = chunk
        elif action == "delete":
            del raw[at : at + len(chunk)]
        else:
            raw[at : at + len(chunk)] = chunk
    path = tmp_path / "wf.yaml"
    path.write_bytes(bytes(raw))
    accepts_or_refuses(lambda: load_workflow(path))


arrays = st.one_of(
    st.builds(lambda n, k: np.random.default_rng(n).random((n, k)), st.integers(0, 40), st.integers(1, 5)),
    st.builds(lambda n: np.arange(n) % 3, st.integers(0, 40)),
    st.builds(lambda n: np.full(n, np.nan), st.integers(0, 5)),
    st.builds(lambda n: np.array(["a", "b"] * n), st.integers(0, 5)),
    st.just(np.array(7.0)),
    st.just(np.array([10**18, -(10**18)])),
)


def npz_bytes(members: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


@FUZZ
@given(st.dictionaries(st.sampled_from(["x", "y", "x_test", "y_test", "other"]), arrays, max_size=5), st.integers(0, 400), st.booleans())
def test_npz_files(tmp_path, members, cut, truncate):
    raw = npz_bytes(members)
    path = tmp_path / "d.npz"
    path.write_bytes(raw[: len(raw) - cut] if truncate else raw)
    accepts_or_refuses(lambda: load_dataset(NpzData(source="npz", path=str(path))))


@FUZZ
@given(st.lists(st.lists(st.sampled_from(["0", "1", "2", "1e400", "nan", "-3", "x", "", "9" * 25, "0.5"]), min_size=1, max_size=4), max_size=40))
def test_csv_files(tmp_path, rows):
    path = tmp_path / "d.csv"
    path.write_text("\n".join(["a,b,label", *(",".join(row) for row in rows)]))
    accepts_or_refuses(lambda: load_dataset(CsvData(source="csv", path=str(path))))


def test_npz_member_that_is_not_an_npy_file(tmp_path):
    """A zip whose members are not .npy files (numpy hands their raw bytes back): one line too. Found by this suite."""
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"\x00" * 1000)
        archive.writestr("y.npy", b"\x00" * 1000)
    accepts_or_refuses(lambda: load_dataset(NpzData(source="npz", path=str(path))))
