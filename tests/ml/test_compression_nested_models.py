"""mobilenet_v2 (tiny, untrained): its backbone is a model inside the model. Cluster reaches every kernel inside it
and saves a model that loads back; quantization-aware training, which tfmot cannot apply to a nested model, is
refused in one line. Fine-tuning and choosing layers inside a nested model: test_cluster, test_prune, test_compression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelpress.common.errors import UserError
from modelpress.common.tf import load_keras_model
from modelpress.contract.data_sources import GeneratedData
from modelpress.contract.training import ModelSpec
from modelpress.io.artifacts import read_meta
from modelpress.io.data import load_dataset
from modelpress.ml.compression import kernel_weights, leaf_layers
from modelpress.ml.keras_artifact import save_keras_artifact
from modelpress.ml.models import mobilenet_v2
from modelpress.steps.cluster import step as cluster
from modelpress.steps.cluster.config import ClusterConfig
from modelpress.steps.quantize import step as quantize
from modelpress.steps.quantize.config import QuantizeConfig
from modelpress.steps.train.config import TrainConfig

DATA = {"source": "generated", "samples": 240, "image_size": [32, 32], "classes": 4, "seed": 0}
K = 8
BACKBONE = "mobilenetv2_0.35_32"


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> str:
    """An untrained mobilenet_v2 (alpha 0.35, 32x32) saved as a train artifact: clustering needs no trained weights."""
    data = load_dataset(GeneratedData(**DATA))
    folder = tmp_path_factory.mktemp("nested") / "train"
    folder.mkdir()
    config = TrainConfig(model=ModelSpec(zoo="mobilenet_v2", params={"alpha": 0.35}), data=DATA)
    model = mobilenet_v2(data.input_shape, data.num_classes, alpha=0.35)
    save_keras_artifact(model, folder, step="train", config=config, parent=None, data_hash=data.hash, metrics={})
    return str(folder)


def backbone_kernels(uri) -> dict[str, np.ndarray]:
    """The kernels inside the backbone of an artifact's model, loaded back from model.h5, by layer name."""
    model = load_keras_model(Path(uri) / "model.h5")
    return {layer.name: w.numpy() for layer in leaf_layers(model.get_layer(BACKBONE)) for w in kernel_weights(layer)}


def test_cluster_reaches_every_kernel_in_the_backbone_tfmot_can_cluster(mobilenet, tmp_path):
    uri = str(tmp_path / "cluster")
    # No fine-tuning: mobilenet's first epoch costs tens of seconds; test_cluster fine-tunes a tiny nested model.
    cluster.run(ClusterConfig(data=DATA, clusters=K, epochs=0), {"model": mobilenet}, uri)
    before, after = backbone_kernels(mobilenet), backbone_kernels(uri)
    meta = read_meta(uri)
    depthwise = [name for name in before if name.endswith("depthwise")]
    assert len(depthwise) == 17 and meta.details["unclustered_layers"] == depthwise  # tfmot keeps them whole
    clustered = [name for name in before if name not in depthwise]
    assert meta.details["clustered_layers"] == [*clustered, "logits"]
    for name in clustered:
        assert 2 <= np.unique(after[name]).size <= K < np.unique(before[name]).size, name
        assert meta.details["weights"]["layers"][name]["unique"] == np.unique(after[name]).size
    assert np.array_equal(after["block_1_depthwise"], before["block_1_depthwise"])


def test_naming_a_depthwise_layer_to_cluster_is_refused(mobilenet, tmp_path):
    with pytest.raises(UserError, match=r"tfmot clusters no weights of a DepthwiseConv2D \(layer 'block_1_depthwise'\)"):
        cluster.run(ClusterConfig(data=DATA, epochs=0, layers=["block_1_depthwise"]), {"model": mobilenet}, str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_quantization_aware_training_of_a_nested_model_is_refused_in_one_line(mobilenet, tmp_path):
    with pytest.raises(UserError) as refused:
        quantize.run(QuantizeConfig(data=DATA, epochs=1), {"model": mobilenet}, str(tmp_path / "q"))
    message = str(refused.value)
    assert "\n" not in message and f"layer '{BACKBONE}' (Functional) is a model inside the model" in message
    assert "use post-training quantization (mode: int8)" in message
    assert not (tmp_path / "q").exists()
