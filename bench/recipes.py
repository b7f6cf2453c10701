"""The reference benchmark's workloads, peers and ModelPress recipes, each written as workflow spec sections.

A workload is the part of a workflow every artifact of it shares (model, data, train, gates, evaluation); a peer is
what a single tool makes out of the box (a conversion target of a model trained the ordinary way); a recipe is a
`compress:` list plus `targets:`, exactly as a platform team would write it in its workflow file.

The protocol (bench/README.md): every architecture ModelPress hands on is given to the peers too: the teacher at its
native resolution (no workload resizes inside the model) and, where a recipe distils, the same student trained from
scratch with the student's budget. Recipes are fixed here, before a run; the steps choose what they choose (structured
pruning's per-layer ratios, distillation's settings) on the validation split, never on the test split.
"""

from __future__ import annotations

import copy

# UCI optdigits: 3823 training images, and 1797 test images by other writers (1 pp = 18 images).
OPTDIGITS = {"source": "optdigits", "split": {"val": 0.1, "seed": 0}}
# The goals' gate: at most 1.0 pp below the workload's trained FP32 model.
GATES = {"max_drop": 0.01}
INT8_CALIBRATION = {"calibration_samples": 300}
# Timing: one fixed CPU thread first (the bench repeats it with every core); batch-32 throughput; no per-layer
# sensitivity on a rejection (it compresses the parent layer by layer: minutes per rejected MobileNetV2 artifact).
EVALUATION = {"latency_runs": 200, "warmup_runs": 20, "batch_size": 32, "threads": 1, "sensitivity_rows": 0}

WORKLOADS: dict[str, dict] = {
    # Overhead-bound (a call costs microseconds): the size goal is measured here, speed goals are retired.
    "cnn_optdigits": {
        "model": {"zoo": "small_cnn", "params": {"filters": [16, 32], "dense": 64}},
        "data": OPTDIGITS,
        "train": {"epochs": 25, "batch_size": 32, "learning_rate": 0.002, "seed": 0},
        "evaluation": EVALUATION,
    },
    # Compute-bound on real data: MobileNetV2 at its full width on the same digits upsampled to 64x64 RGB, the
    # smallest size where batch-1 latency grows with the pixels (bench/README.md has the timing).
    "mobilenet_v2_optdigits": {
        "model": {"zoo": "mobilenet_v2", "params": {"alpha": 1.0}},
        "data": {**OPTDIGITS, "resize": [64, 64], "channels": 3},
        "train": {"epochs": 8, "batch_size": 32, "learning_rate": 0.001, "seed": 0},
        "evaluation": EVALUATION,
    },
    # Synthetic: generated images with 20 classes and heavy pixel noise, so that the FP32 model stays below 95% and
    # a drop has room to show; 2100 test images (1 pp = 21).
    "mobilenet_v2_synthetic": {
        "model": {"zoo": "mobilenet_v2", "params": {"alpha": 1.0}},
        "data": {"source": "generated", "samples": 10500, "image_size": [32, 32], "classes": 20, "noise": 3.5, "seed": 0,
                 "split": {"val": 0.1, "test": 0.2, "seed": 0}},
        "train": {"epochs": 12, "batch_size": 32, "learning_rate": 0.001, "seed": 0},
        "evaluation": EVALUATION,
    },
}
# Workloads whose FP32 model and headline recipe are trained again with more seeds (bench.reference --seeds), and
# what picks the headline: the best blessed artifact of the goal measured there (size on the digits CNN, speed on
# the compute-bound CNN).
SEEDED = {"cnn_optdigits": "size_gzip_bytes", "mobilenet_v2_optdigits": "latency_ms_p50"}

# Peers: plan artifact name -> row name. "train" is the trained model's SavedModel run in TensorFlow (TF Serving's CPU
# runtime); the others are the convert step's targets with each toolkit's default recipe, one per runtime.
PEERS = {
    "train": "tf_fp32_savedmodel",
    "tflite_fp32": "tflite_fp32",
    "tflite_int8": "tflite_int8_ptq",
    "openvino_fp32": "openvino_fp32",
    "openvino_int8": "openvino_int8_nncf",
    "onnx": "onnx_fp32",
}
PEER_TARGETS = ["saved_model", "tflite_fp32", {"format": "tflite_int8", "options": INT8_CALIBRATION},
                "openvino_fp32", {"format": "openvino_int8", "options": INT8_CALIBRATION}, "onnx"]
# The student architecture trained from scratch, through the same single-tool INT8 paths.
SCRATCH_PEERS = {
    "train": "scratch_student_fp32",
    "tflite_int8": "scratch_student -> tflite_int8_ptq",
    "openvino_int8": "scratch_student -> openvino_int8_nncf",
}
SCRATCH_TARGETS = [{"format": "tflite_int8", "options": INT8_CALIBRATION}, {"format": "openvino_int8", "options": INT8_CALIBRATION}]

# Students for distillation, per workload: the same family, about a quarter of the width, same input size.
STUDENTS = {
    "cnn_optdigits": {"zoo": "small_cnn", "params": {"filters": [8, 16], "dense": 32}},
    "mobilenet_v2_optdigits": {"zoo": "mobilenet_v2", "params": {"alpha": 0.35}},
    "mobilenet_v2_synthetic": {"zoo": "mobilenet_v2", "params": {"alpha": 0.35}},
}

# Fine-tuning epochs of each technique, per workload (MobileNetV2 epochs cost minutes). The student's epochs
# (distilled, and from scratch inside the distill step and as a peer): None trains as long as the teacher.
FINE_TUNING = {
    "cnn_optdigits": {"prune": 10, "cluster": 3, "quantize": 2, "distill": None},
    "mobilenet_v2_optdigits": {"prune": 3, "cluster": 1, "distill": None},
    "mobilenet_v2_synthetic": {"prune": 3, "cluster": 1, "distill": None},
}


def student_epochs(workload: str) -> int:
    """The epochs a student trains for, distilled or from scratch."""
    return FINE_TUNING[workload]["distill"] or WORKLOADS[workload]["train"]["epochs"]


def structured(workload: str) -> dict:
    """Channels removed across residual adds and depthwise convolutions, per-layer shares from a sensitivity pass on
    the validation split, fine-tuned with the unpruned model as teacher (issue 18 item 1)."""
    return {"technique": "prune", "method": "structured", "ratio": 0.5, "allocation": "sensitivity", "epochs": FINE_TUNING[workload]["prune"]}


def distill(workload: str) -> dict:
    """Distillation into the workload's student; the step chooses its settings on the validation split and hands on
    the scratch student instead when that one is better there (issue 18 item 2)."""
    return {"technique": "distill", "student": copy.deepcopy(STUDENTS[workload]), "epochs": student_epochs(workload)}


def recipes(workload: str) -> list[dict]:
    """ModelPress recipes for a workload: name, compress and targets as in a workflow file."""
    epochs = FINE_TUNING[workload]
    int8_targets = [{"format": "tflite_int8", "options": INT8_CALIBRATION}, {"format": "openvino_int8", "options": INT8_CALIBRATION}]

    def prune_cluster(sparsity: float) -> list[dict]:
        return [{"technique": "prune", "method": "magnitude", "sparsity": sparsity, "epochs": epochs["prune"]},
                {"technique": "cluster", "clusters": 16, "epochs": epochs["cluster"]}]

    # tfmot's quantization-aware training refuses a model nested in a model (MobileNetV2's backbone): there the
    # sparse, clustered model is quantized after training instead.
    if workload.startswith("mobilenet_v2"):
        size = [{"name": "prune50+cluster16+int8", "compress": prune_cluster(0.5),
                 "targets": [{"format": "tflite_int8", "options": INT8_CALIBRATION}]}]
    else:
        pcqat = {"technique": "quantize", "mode": "pcqat", "epochs": epochs["quantize"]}
        size = [{"name": f"prune{int(s * 100)}+cluster16+pcqat", "compress": [*prune_cluster(s), pcqat], "targets": ["tflite_int8"]}
                for s in (0.5, 0.75)]
    return [
        *size,
        {"name": "structured50+int8", "compress": [structured(workload)], "targets": copy.deepcopy(int8_targets)},
        {"name": "distilled+int8", "compress": [distill(workload)], "targets": copy.deepcopy(int8_targets)},
        {"name": "distilled+structured50+int8", "compress": [distill(workload), structured(workload)], "targets": copy.deepcopy(int8_targets)},
    ]


def search_ladder(workload: str) -> list[dict]:
    """The ladder the bench gives the search: cheapest first, the recipes above ending in TFLite INT8 PTQ (the
    default ladder's QAT rungs cannot take MobileNetV2's nested backbone)."""
    int8 = {"technique": "quantize", "mode": "int8"}
    return [{"name": "ptq_int8", "compress": [int8]},
            {"name": "structured_int8", "compress": [structured(workload), int8]},
            {"name": "distill_structured_int8", "compress": [distill(workload), structured(workload), int8]}]


def workflow(workload: str, name: str, compress: list[dict], targets: list, seed: int = 0) -> dict:
    """A complete workflow spec: the workload's sections plus a recipe's (or the peers') compress and targets,
    trained with `seed`."""
    spec = {"name": name, **copy.deepcopy(WORKLOADS[workload]), "compress": copy.deepcopy(compress),
            "targets": copy.deepcopy(targets), "gates": GATES}
    spec["train"]["seed"] = seed
    return spec


def scratch_student_workflow(workload: str, name: str, seed: int = 0) -> dict:
    """The workload with its student as the model, trained from scratch for the student's epochs, and the
    single-tool INT8 targets."""
    spec = workflow(workload, name, [], SCRATCH_TARGETS, seed)
    spec["model"] = copy.deepcopy(STUDENTS[workload])
    spec["train"]["epochs"] = student_epochs(workload)
    return spec
