"""prune: magnitude pruning with tensorflow-model-optimization (optionally N:M structured sparsity), structural
pruning that rebuilds a physically smaller model, or lottery-ticket rounds that rewind survivors to their initial
values. Each fine-tunes and saves a stripped Keras model whose artifact.json records what was removed."""

from __future__ import annotations

from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io import storage
from modelpress.io.data import load_dataset
from modelpress.ml.compression import parent_model, save_compressed
from modelpress.steps.prune.config import PruneConfig
from modelpress.steps.prune.lottery import find_ticket
from modelpress.steps.prune.magnitude import prune_magnitude
from modelpress.steps.prune.structural import prune_structure


def run(config: PruneConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    _, keras = import_tf()
    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    keras.utils.set_random_seed(config.train.seed)
    with parent_model(inputs["model"], "prune", config.model) as (model, meta, folder):
        log(f"prune ({config.method}): {model.name}, {model.count_params():,} parameters, parent accuracy "
            f"{meta.metrics.get('accuracy', float('nan')):.4f}")
        if config.method == "magnitude":
            pruned, details = prune_magnitude(model, config, data)
        elif config.method == "structured":
            pruned, details = prune_structure(model, config, data)
        else:
            pruned, details = find_ticket(model, folder, config, data)
    return save_compressed(
        pruned,
        technique="prune",
        config=config,
        parent_uri=inputs["model"],
        data=data,
        output=output,
        overwrite=overwrite,
        details={
            "method": config.method,
            "parent_accuracy": meta.metrics.get("accuracy"),
            "parent_params": meta.metrics.get("params"),
            **details,
        },
    )
