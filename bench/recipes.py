"""The reference benchmark's workloads, peers and ModelPress recipes, each written as workflow spec sections.

A workload is the part of a workflow every artifact of it shares (model, data, train, gates, evaluation); a peer is
a conversion target of the trained model (what TF Serving, TFLite and OpenVINO offer out of the box); a recipe is a
`compress:` list plus `targets:`, exactly as a platform team would write it in its workflow file.
"""

from __future__ import annotations

import copy

DIGITS = {"source": "digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}}
# The goals' gate: at most 1.0 pp below the trained FP32 model.
GATES = {"max_drop": 0.01}
# Timing settings every artifact is measured with (evaluation.threads: one fixed CPU thread for every runtime).
DIGITS_EVALUATION = {"latency_runs": 200, "warmup_runs": 20, "batch_size": 256, "threads": 1}
INT8_CALIBRATION = {"calibration_samples": 300}

WORKLOADS: dict[str, dict] = {
    "mlp_digits": {
        "model": {"zoo": "mlp"},
        "data": DIGITS,
        "train": {"epochs": 30, "batch_size": 32, "learning_rate": 0.001, "seed": 0},
        "evaluation": DIGITS_EVALUATION,
    },
    "cnn_digits": {
        "model": {"zoo": "small_cnn", "params": {"filters": [16, 32], "dense": 64}},
        "data": DIGITS,
        "train": {"epochs": 25, "batch_size": 32, "learning_rate": 0.002, "seed": 0},
        "evaluation": DIGITS_EVALUATION,
    },
    # MobileNetV2 at its real size (alpha 1.0, 160x160 inside the model) on generated 64x64 images: realistic model
    # size and latency; training is kept short so the whole bench fits its time budget.
    "mobilenet_v2_generated": {
        "model": {"zoo": "mobilenet_v2", "params": {"alpha": 1.0, "input_size": 160}},
        "data": {"source": "generated", "samples": 1000, "image_size": [64, 64], "classes": 10, "seed": 0,
                 "split": {"val": 0.1, "test": 0.2, "seed": 0}},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 0.001, "seed": 0},
        "evaluation": {"latency_runs": 50, "warmup_runs": 5, "batch_size": 16, "threads": 1},
    },
}

# Peers: plan artifact name -> row name. "train" is the trained model's SavedModel run in TensorFlow (TF Serving's CPU
# runtime); the others are the convert step's targets with each toolkit's default recipe.
PEERS = {
    "train": "tf_fp32_savedmodel",
    "tflite_fp32": "tflite_fp32",
    "tflite_dynamic": "tflite_dynamic_ptq",
    "tflite_int8": "tflite_int8_ptq",
    "openvino_fp32": "openvino_fp32",
    "openvino_int8": "openvino_int8_nncf",
}
PEER_TARGETS = ["saved_model", "tflite_fp32", "tflite_dynamic", {"format": "tflite_int8", "options": INT8_CALIBRATION},
                "openvino_fp32", {"format": "openvino_int8", "options": INT8_CALIBRATION}]

# Students for distillation, per workload: the same family, about a quarter of the width.
STUDENTS = {
    "mlp_digits": {"zoo": "mlp", "params": {"hidden": [64, 32]}},
    "cnn_digits": {"zoo": "small_cnn", "params": {"filters": [8, 16], "dense": 32}},
    "mobilenet_v2_generated": {"zoo": "mobilenet_v2", "params": {"alpha": 0.35, "input_size": 96}},
}


# Fine-tuning epochs of each technique, per workload: MobileNetV2 epochs cost minutes, and its generated data is
# learnt within a few epochs.
# The student's epochs (distilled and, inside the distill step, from scratch): None trains as long as the teacher.
FINE_TUNING = {
    "mlp_digits": {"prune": 10, "cluster": 3, "quantize": 2, "distill": None},
    "cnn_digits": {"prune": 10, "cluster": 3, "quantize": 2, "distill": None},
    "mobilenet_v2_generated": {"prune": 5, "cluster": 1, "distill": 8},
}


def recipes(workload: str) -> list[dict]:
    """ModelPress recipes for a workload: name, compress and targets as in a workflow file."""
    epochs = FINE_TUNING[workload]
    int8_targets = [{"format": "tflite_int8", "options": INT8_CALIBRATION}, {"format": "openvino_int8", "options": INT8_CALIBRATION}]
    prune_cluster = [
        {"technique": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": epochs["prune"]},
        {"technique": "cluster", "clusters": 16, "epochs": epochs["cluster"]},
    ]
    # tfmot's quantization-aware training refuses a model nested in a model (MobileNetV2's backbone): there the
    # sparse, clustered model is quantized after training instead.
    nested = workload == "mobilenet_v2_generated"
    return [
        {
            "name": "prune50+cluster16+" + ("int8" if nested else "pcqat"),
            "compress": prune_cluster + ([] if nested else [{"technique": "quantize", "mode": "pcqat", "epochs": epochs["quantize"]}]),
            "targets": [{"format": "tflite_int8", **({"options": INT8_CALIBRATION} if nested else {})}],
        },
        {
            "name": "prune50+int8",
            "compress": [{"technique": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": epochs["prune"]}],
            "targets": copy.deepcopy(int8_targets),
        },
        {
            "name": "structural50+int8",
            "compress": [{"technique": "prune", "method": "structured", "ratio": 0.5, "epochs": epochs["prune"]}],
            "targets": copy.deepcopy(int8_targets),
        },
        {
            "name": "distilled+int8",
            "compress": [{"technique": "distill", "student": STUDENTS[workload],
                          **({"epochs": epochs["distill"]} if epochs["distill"] else {})}],
            "targets": copy.deepcopy(int8_targets),
        },
    ]


def workflow(workload: str, name: str, compress: list[dict], targets: list) -> dict:
    """A complete workflow spec: the workload's sections plus a recipe's (or the peers') compress and targets."""
    return {"name": name, **copy.deepcopy(WORKLOADS[workload]), "compress": copy.deepcopy(compress),
            "targets": copy.deepcopy(targets), "gates": GATES}
