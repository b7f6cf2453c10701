"""quantize: quantization-aware training (QAT) and its collaborative variants, saved with their QuantizeWrapper layers.

Modes: qat (tfmot's default 8-bit scheme), pqat (keeps a pruned parent's zeros), cqat (keeps a clustered parent's
shared values), pcqat (keeps both); auto picks one from the parent's weights. The wrappers learn the INT8 ranges the
TFLite converter turns into a real INT8 model (convert, format tflite_int8). Post-training modes (dynamic, int8, fp16)
are not Keras steps: the plan makes them TFLite conversion targets.
"""

from __future__ import annotations

import re

import numpy as np

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.contract.formats import POST_TRAINING_TARGETS
from modelpress.io import storage
from modelpress.io.data import load_dataset
from modelpress.ml.compression import fine_tune, parent_model, refuse_quantized, save_compressed, weight_stats
from modelpress.steps.quantize.config import QuantizeConfig

# A kernel counts as clustered when it holds few distinct values for its size: at most tfmot's limit for cluster
# preservation, and at most a quarter of its weights (a small float kernel has as many values as weights).
MAX_CENTROIDS = 1024
MAX_DISTINCT_SHARE = 0.25
# The layer class in tfmot's refusals: "Layer norm:<class '...LayerNormalization'> is not supported. ..." or
# "`get_quantize_config()` called on an unsupported layer <class '...Rescaling'>. ..."
REFUSED_CLASS = re.compile(r"<class '(?:[\w.]*\.)?(?P<kind>\w+)'>")


def clustered_layers(stats: dict) -> list[str]:
    return [
        name
        for name, layer in stats["layers"].items()
        if layer["unique"] <= MAX_CENTROIDS and layer["unique"] <= MAX_DISTINCT_SHARE * layer["params"]
    ]


def choose_mode(requested: str, stats: dict) -> str:
    """The QAT mode to run: `auto` follows the parent; an explicit mode must have something to preserve."""
    pruned, clustered = stats["sparsity"] > 0, bool(clustered_layers(stats))
    if requested == "auto":
        return {(False, False): "qat", (True, False): "pqat", (False, True): "cqat", (True, True): "pcqat"}[(pruned, clustered)]
    if requested in ("pqat", "pcqat") and not pruned:
        raise UserError(f"quantize mode {requested} keeps zero weights, but the parent has none; prune first or use mode qat")
    if requested in ("cqat", "pcqat") and not clustered:
        raise UserError(f"quantize mode {requested} keeps clusters, but no layer of the parent is clustered; cluster first or use mode qat")
    return requested


def quantize_scheme(mode: str):
    import tensorflow_model_optimization as tfmot

    if mode == "pqat":
        return tfmot.quantization.keras.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    if mode in ("cqat", "pcqat"):
        return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=mode == "pcqat")
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def unsupported_layer(name: str, kind: str) -> UserError:
    return UserError(
        f"quantize: layer '{name}' ({kind}) is not supported by quantization-aware training; "
        "replace it with supported layers or use post-training quantization (mode: int8)"
    )


def quantization_aware(model, mode: str):
    """The parent wrapped for QAT with the mode's scheme; tfmot's multi-line refusals become one line naming the layer."""
    import tensorflow_model_optimization as tfmot

    _, keras = import_tf()
    quantization = tfmot.quantization.keras
    nested = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    if nested is not None:  # tfmot: "Quantizing a keras Model inside another keras Model is not supported"
        raise UserError(
            f"quantize: layer '{nested.name}' ({type(nested).__name__}) is a model inside the model, which tfmot's "
            "quantization-aware training cannot wrap; use post-training quantization (mode: int8), or a builder that "
            "calls the inner model's layers directly"
        )
    try:
        return quantization.quantize_apply(quantization.quantize_annotate_model(model), quantize_scheme(mode))
    except (RuntimeError, ValueError) as exc:
        found = REFUSED_CLASS.search(str(exc))
        refused = next((layer for layer in model.layers if found and type(layer).__name__ == found["kind"]), None)
        if refused is not None:
            raise unsupported_layer(refused.name, found["kind"]) from None
        raise UserError(f"quantize ({mode}) cannot wrap this model: {str(exc).splitlines()[0]}") from None


def with_default_wrappers(trained, parent, batch: np.ndarray):
    """The trained collaborative-QAT model as a default 8-bit QAT model with the same weights and ranges.

    tfmot saves a QuantizeConfig without its weight quantizer, so a PQAT/CQAT model reloads with the default
    quantizer and its extra variables (centroids, indices) no longer fit. At inference the two compute the same: the
    kernels already hold the kept zeros and shared values. Checked on a batch before anything is written.
    """
    import tensorflow_model_optimization as tfmot

    quantization = tfmot.quantization.keras
    plain = quantization.quantize_apply(quantization.quantize_annotate_model(parent))
    for layer, trained_layer in zip(plain.layers, trained.layers, strict=True):  # same parent, same layer order
        trained_weights = {short_name(w, trained_layer): w for w in trained_layer.weights}
        layer.set_weights([trained_weights[short_name(w, layer)].numpy() for w in layer.weights])
    difference = float(np.max(np.abs(plain.predict(batch, verbose=0) - trained.predict(batch, verbose=0))))
    if difference > 1e-5:
        raise StepFailed(f"quantize: the saved QAT model differs from the trained one by {difference:.2g}; nothing was written")
    return plain


def short_name(weight, layer) -> str:
    """A weight's name inside its layer: 'kernel', 'bias', 'kernel_min', 'min' (of quantize_layer_2_min), ..."""
    return weight.name.split("/")[-1].split(":")[0].removeprefix(f"{layer.name}_")


def run(config: QuantizeConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    if config.mode in POST_TRAINING_TARGETS:
        target = POST_TRAINING_TARGETS[config.mode]
        raise UserError(
            f"quantize mode {config.mode} is post-training quantization, done by the TFLite conversion: run the convert "
            f"step with format {target} (in a workflow, compress: [{{technique: quantize, mode: {config.mode}}}] adds it)"
        )
    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    with parent_model(inputs["model"], "quantize", config.model) as (model, parent, _):
        pass
    refuse_quantized(model, "quantize")
    before = weight_stats(model)
    mode = choose_mode(config.mode, before)
    log(
        f"quantize: {mode} (parent kernel sparsity {before['sparsity']:.1%}, "
        f"clustered layers: {', '.join(clustered_layers(before)) or 'none'}); fine-tuning {config.epochs} epochs"
    )
    wrapped = quantization_aware(model, mode)
    fine_tune(wrapped, data, config.train, config.epochs, config.learning_rate, label=mode)
    saved = wrapped if mode == "qat" else with_default_wrappers(wrapped, model, data.head("test", 256)[0])
    return save_compressed(
        saved,
        technique="quantize",
        config=config,
        parent_uri=inputs["model"],
        data=data,
        output=output,
        overwrite=overwrite,
        details={
            "mode": mode,
            "requested_mode": config.mode,
            "clustered_layers": clustered_layers(before),
            "parent_accuracy": parent.metrics.get("accuracy"),
            "parent_weights": before,
        },
    )
