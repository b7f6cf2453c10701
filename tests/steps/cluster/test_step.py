"""cluster: at most k distinct values per clustered kernel, zeros of a pruned parent kept, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpress.common.tf import load_keras_model
from modelpress.contract.training import ModelSpec
from modelpress.io.artifacts import read_meta
from modelpress.steps.cluster import step as cluster
from modelpress.steps.cluster.config import ClusterConfig
from modelpress.steps.train import step as train
from modelpress.steps.train.config import TrainConfig
from tests.cli.test_main_bad_inputs import assert_one_line_error
from tests.steps.compress_parents import DATA, TINY_TRAIN, kernels, prune_with_tfmot, train_tiny

K = 8


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cluster")
    trained = train_tiny(str(folder / "train"))
    return {"train": trained, "pruned": prune_with_tfmot(trained, str(folder / "pruned")), "folder": str(folder)}


def run_cluster(parents, parent: str, name: str, **params) -> str:
    uri = f"{parents['folder']}/{name}"
    cluster.run(ClusterConfig(data=DATA, clusters=K, epochs=1, **params), {"model": parents[parent]}, uri)
    return uri


def test_every_kernel_keeps_at_most_k_values_and_the_artifact_says_so(parents):
    uri = run_cluster(parents, "train", "all")
    for name, kernel in kernels(uri).items():
        assert 2 <= np.unique(kernel).size <= K, name
    meta = read_meta(uri)
    assert meta.step == "cluster" and meta.parent == parents["train"]
    assert meta.details["clustered_layers"] == ["dense_1", "logits"] and meta.details["init"] == "kmeans++"
    assert meta.details["preserve_sparsity"] is False  # the trained parent has no zeros
    assert all(layer["unique"] <= K for layer in meta.details["weights"]["layers"].values())
    assert meta.metrics["clusters"] == K and 0.5 < meta.metrics["accuracy"] <= 1
    # Few distinct values compress: the clustered SavedModel gzips smaller than its parent's.
    assert meta.metrics["size_gzip_bytes"] < read_meta(parents["train"]).metrics["size_gzip_bytes"]


def test_only_the_chosen_layers_are_clustered(parents):
    uri = run_cluster(parents, "train", "dense_only", layers=["dense_1"], init="linear")
    after, before = kernels(uri), kernels(parents["train"])
    assert np.unique(after["dense_1"]).size <= K
    assert np.unique(after["logits"]).size == np.unique(before["logits"]).size == before["logits"].size
    assert read_meta(uri).details["clustered_layers"] == ["dense_1"]


def test_layers_named_inside_a_nested_model_are_clustered(parents):
    """Two clustered layers in one nested model: stripped naively, both kernels are 'kernel:0' and HDF5 refuses the
    second ("name already exists")."""
    parent, uri = f"{parents['folder']}/nested", f"{parents['folder']}/nested_clustered"
    model = ModelSpec(builder="tests.steps.compress_parents:nested_mlp")
    train.run(TrainConfig(model=model, data=DATA, train=TINY_TRAIN), {}, parent)
    cluster.run(ClusterConfig(data=DATA, clusters=K, epochs=1, layers=["inner_1", "inner_2"]), {"model": parent}, uri)
    model = load_keras_model(Path(uri) / "model.h5")
    backbone = model.get_layer("backbone")
    for name in ("inner_1", "inner_2"):
        assert 2 <= np.unique(backbone.get_layer(name).kernel.numpy()).size <= K, name
    assert np.unique(model.get_layer("logits").kernel.numpy()).size > K
    assert read_meta(uri).details["clustered_layers"] == ["inner_1", "inner_2"]


def test_a_pruned_parent_is_clustered_without_losing_its_zeros(parents):
    uri = run_cluster(parents, "pruned", "pruned_clustered", init="density")
    after, before = kernels(uri), kernels(parents["pruned"])
    for name, kernel in before.items():
        zeros = kernel == 0
        assert zeros.mean() == pytest.approx(0.5, abs=0.01), name
        assert np.all(after[name][zeros] == 0), name  # zeros stay zeros
        assert np.unique(after[name]).size <= K, name
    assert read_meta(uri).details["preserve_sparsity"] is True


def test_fewer_than_two_clusters_is_refused(cli, parents, tmp_path):
    config = json.dumps({"data": DATA, "clusters": 1})
    result = cli("step", "cluster", "--config", config, "--input", f"model={parents['train']}", "--output", str(tmp_path / "c"))
    assert_one_line_error(result, "clusters", "at least 2 (got 1)")
    assert not (tmp_path / "c").exists()


def test_an_unknown_layer_is_named_with_the_layers_there_are(cli, parents, tmp_path):
    config = json.dumps({"data": DATA, "layers": ["dense_9"], "epochs": 0})
    result = cli("step", "cluster", "--config", config, "--input", f"model={parents['train']}", "--output", str(tmp_path / "c"))
    assert_one_line_error(result, "no layer named 'dense_9'", "dense_1, logits")
    assert not (tmp_path / "c").exists()
