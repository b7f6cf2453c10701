"""cluster: weight clustering (tfmot) -> fine-tune -> strip_clustering -> save.

Each chosen kernel is replaced by k shared values (centroids) and an index per weight; fine-tuning trains the
centroids. A sparse (pruned) parent is clustered with preserve_sparsity so its zeros stay zeros. The saved model is
a plain Keras model whose kernels hold at most k distinct values: what compresses well with gzip and what CQAT/PCQAT
in the quantize step keep through quantization-aware training.
"""

from __future__ import annotations

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io import storage
from modelpress.io.data import load_dataset
from modelpress.ml.compression import (
    fine_tune,
    layer_names,
    parent_model,
    refuse_quantized,
    save_compressed,
    weight_stats,
    wrap_layers,
)
from modelpress.steps.cluster.config import CENTROID_INITS, ClusterConfig


def wrap_for_clustering(model, names: list[str], config: ClusterConfig, preserve_sparsity: bool):
    """A copy of the model with the named layers (inside nested models too) wrapped by ClusterWeights, the others
    copied as they are; and the named layers tfmot leaves alone, with the reason."""
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    init = getattr(clustering.CentroidInitialization, CENTROID_INITS[config.init])
    unclustered: dict[str, str] = {}

    def wrap(layer):  # the trained layer objects are reused: the copy starts from their weights
        if layer.name not in names:
            return layer
        kind = type(layer).__name__
        try:
            wrapper = clustering.cluster_weights(
                layer, number_of_clusters=config.clusters, cluster_centroids_init=init, preserve_sparsity=preserve_sparsity
            )
        except ValueError as exc:  # tfmot's way of saying a layer type cannot be clustered
            raise UserError(
                f"cluster: layer '{layer.name}' ({kind}) cannot be clustered ({str(exc).splitlines()[0]}); "
                "leave it out of cluster.layers"
            ) from None
        if wrapper is layer:  # tfmot leaves a Conv2D with too few weights for k clusters as it is
            unclustered[layer.name] = f"fewer weights than {config.clusters} clusters need"
        elif not wrapper.layer.get_clusterable_weights():  # e.g. DepthwiseConv2D: tfmot keeps its kernel whole
            if layer.name in (config.layers or []):
                raise UserError(f"cluster: tfmot clusters no weights of a {kind} (layer '{layer.name}'); leave it out of cluster.layers")
            unclustered[layer.name] = f"tfmot clusters no weights of a {kind}"
            return layer
        return wrapper

    return wrap_layers(model, wrap), unclustered


def strip_clustering(wrapped):
    """The plain model with the clustered kernels. tfmot's strip_clustering builds each plain layer outside its name
    scope, so the weights are all called 'kernel:0', 'bias:0'...: inside a nested model, whose weights HDF5 stores
    by name, they collide ("name already exists"). A fresh copy builds every layer in its own scope."""
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    plain = keras.models.clone_model(stripped)
    plain.set_weights(stripped.get_weights())
    return plain


def run(config: ClusterConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    with parent_model(inputs["model"], "cluster", config.model) as (model, parent, _):
        pass
    refuse_quantized(model, "cluster")
    names = layer_names(model, config.layers, "cluster")
    before = weight_stats(model)
    preserve = config.preserve_sparsity if config.preserve_sparsity is not None else before["sparsity"] > 0
    if preserve and config.preserve_sparsity is None:
        log(f"cluster: the parent is sparse (kernel sparsity {before['sparsity']:.1%}): clustering with preserve_sparsity")
    wrapped, unclustered = wrap_for_clustering(model, names, config, preserve)
    clustered_layers = [name for name in names if name not in unclustered]
    for reason in dict.fromkeys(unclustered.values()):  # one line per reason: mobilenet_v2 has 17 depthwise layers
        log(f"cluster: left unclustered ({reason}): {', '.join(name for name in unclustered if unclustered[name] == reason)}")
    log(f"cluster: {config.clusters} clusters ({config.init}) on {', '.join(clustered_layers)}; fine-tuning {config.epochs} epochs")
    if config.epochs:
        fine_tune(wrapped, data, config.train, config.epochs, config.learning_rate, label="cluster")
    return save_compressed(
        strip_clustering(wrapped),
        technique="cluster",
        config=config,
        parent_uri=inputs["model"],
        data=data,
        output=output,
        overwrite=overwrite,
        metrics={"clusters": config.clusters},
        details={
            "clusters": config.clusters,
            "init": config.init,
            "preserve_sparsity": preserve,
            "clustered_layers": clustered_layers,
            "unclustered_layers": list(unclustered),
            "parent_accuracy": parent.metrics.get("accuracy"),
            "parent_weights": before,
        },
    )
