"""cluster: weight clustering (tfmot) -> fine-tune -> strip_clustering -> save.

Each chosen kernel is replaced by k shared values (centroids) and an index per weight; fine-tuning trains the
centroids. A sparse (pruned) parent is clustered with preserve_sparsity so its zeros stay zeros. The saved model is
a plain Keras model whose kernels hold at most k distinct values: what compresses well with gzip and what CQAT/PCQAT
in the quantize step keep through quantization-aware training.
"""

from __future__ import annotations

from .._core import storage
from .._core.compression import fine_tune, layer_names, parent_model, refuse_quantized, save_compressed, weight_stats
from .._core.data import load_dataset
from .._core.errors import UserError
from .._core.progress import log
from .._core.tf import import_tf
from .config import CENTROID_INITS, ClusterConfig


def wrap_for_clustering(model, names: list[str], config: ClusterConfig, preserve_sparsity: bool):
    """A copy of the model with the named layers wrapped by ClusterWeights; the others are copied as they are."""
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    init = getattr(clustering.CentroidInitialization, CENTROID_INITS[config.init])

    def wrap(layer):  # the trained layer objects are reused: the copy starts from their weights
        if layer.name not in names:
            return layer
        try:
            return clustering.cluster_weights(
                layer, number_of_clusters=config.clusters, cluster_centroids_init=init, preserve_sparsity=preserve_sparsity
            )
        except ValueError as exc:  # tfmot's way of saying a layer type cannot be clustered
            raise UserError(
                f"cluster: layer '{layer.name}' ({type(layer).__name__}) cannot be clustered ({str(exc).splitlines()[0]}); "
                "leave it out of cluster.layers"
            ) from None

    return keras.models.clone_model(model, clone_function=wrap)


def run(config: ClusterConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    import tensorflow_model_optimization as tfmot

    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    with parent_model(inputs["model"], "cluster") as (model, parent, _):
        pass
    refuse_quantized(model, "cluster")
    names = layer_names(model, config.layers, "cluster")
    before = weight_stats(model)
    preserve = config.preserve_sparsity if config.preserve_sparsity is not None else before["sparsity"] > 0
    if preserve and config.preserve_sparsity is None:
        log(f"cluster: the parent is sparse (kernel sparsity {before['sparsity']:.1%}): clustering with preserve_sparsity")
    wrapped = wrap_for_clustering(model, names, config, preserve)
    clustered_layers = [layer.layer.name for layer in wrapped.layers if type(layer).__name__.startswith("ClusterWeights")]
    skipped = [name for name in names if name not in clustered_layers]
    if skipped:  # tfmot leaves a Conv2D with too few weights for k clusters as it is
        log(f"cluster: {', '.join(skipped)} left unclustered (fewer weights than {config.clusters} clusters need)")
    log(f"cluster: {config.clusters} clusters ({config.init}) on {', '.join(clustered_layers)}; fine-tuning {config.epochs} epochs")
    if config.epochs:
        fine_tune(wrapped, data, config.train, config.epochs, config.learning_rate, label="cluster")
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    return save_compressed(
        stripped,
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
            "unclustered_layers": skipped,
            "parent_accuracy": parent.metrics.get("accuracy"),
            "parent_weights": before,
        },
    )
