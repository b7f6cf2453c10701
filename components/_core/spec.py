"""The workflow spec: one YAML file describes model, data, training, compression, targets, gates, push, serving.

Validated by pydantic. Every mistake becomes one line naming the file, the line, the key and the fix
(`modelpress check` prints exactly that). This module imports no TensorFlow: DAG files and the KFP
compiler load specs too.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import UserError
from .formats import TARGET_FORMATS  # the spec accepts exactly the formats formats.py declares

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class StrictModel(BaseModel):
    """Rejects unknown keys with the closest valid key, so a misspelling never silently becomes a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        valid = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        for key in data:
            if key not in valid:
                raise ValueError(unknown_key_message(str(key), valid))
        return data


def unknown_key_message(key: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return f"unknown key '{key}'; {hint}"


# ---------------------------------------------------------------------------------------------------------- model
ZOO_MODELS = ("mlp", "small_cnn", "mobilenet_v2")


class ModelSpec(StrictModel):
    zoo: str | None = Field(None, description="a built-in architecture: mlp (300-150 dense), small_cnn, mobilenet_v2")
    builder: str | None = Field(
        None, description="your own 'package.module:function(input_shape, num_classes, **params)' returning a keras Model"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="architecture parameters (e.g. alpha, input_size)")

    @field_validator("zoo")
    @classmethod
    def _known_zoo(cls, value: str | None) -> str | None:
        if value is not None and value not in ZOO_MODELS:
            close = difflib.get_close_matches(value, ZOO_MODELS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "or set 'builder: package.module:function'"
            raise ValueError(f"unknown zoo model '{value}'; choose one of {', '.join(ZOO_MODELS)} {hint}")
        return value

    @field_validator("builder")
    @classmethod
    def _builder_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(f"builder '{value}' must look like 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.zoo is None) == (self.builder is None):
            raise ValueError("set exactly one of 'zoo' (mlp, small_cnn, mobilenet_v2) or 'builder' (package.module:function)")
        return self


# ----------------------------------------------------------------------------------------------------------- data
class SplitSpec(StrictModel):
    val: float = Field(0.1, ge=0.0, lt=1.0, description="share of training rows held out for validation")
    test: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows held out for test (sources without a fixed test set)")
    seed: int = Field(0, description="seed of the shuffled split")

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.val + self.test >= 0.9:
            raise ValueError(f"val + test = {self.val + self.test:.2f} leaves too little to train on; keep it below 0.9")
        return self


class DataBase(StrictModel):
    resize: tuple[int, int] | None = Field(None, description="[height, width] to resize images to")
    channels: Literal[1, 3] | None = Field(None, description="force 1 (grayscale) or 3 (RGB, repeated) channels")
    split: SplitSpec = Field(default_factory=SplitSpec, description="train/val/test shares and seed (see data.split)")


class DigitsData(DataBase):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""

    source: Literal["digits"]


class OptdigitsData(DataBase):
    """UCI optdigits: the same 8x8 digits with the writer-disjoint 3823 train / 1797 test split."""

    source: Literal["optdigits"]
    path: str | None = Field(None, description="folder with optdigits.tra/.tes; default: the copy shipped with ModelPress")


class GeneratedData(DataBase):
    """A deterministic, learnable image data set of any size, for scale tests and benchmarks."""

    source: Literal["generated"]
    samples: int = Field(2000, ge=20, description="number of examples")
    image_size: tuple[int, int] = Field((32, 32), description="[height, width]")
    image_channels: Literal[1, 3] = Field(3, description="channels per image")
    classes: int = Field(10, ge=2, description="number of classes")
    seed: int = Field(0, description="same seed, same data")


class FileData(DataBase):
    path: str = Field(..., description="local path or s3://bucket/key")
    num_classes: int | None = Field(None, ge=2, description="number of classes; default: largest label + 1")


class CsvData(FileData):
    """One row per example: feature columns then a label column (header row required)."""

    source: Literal["csv"]
    label_column: str = Field("label", description="the header name of the label column")
    shape: list[int] | None = Field(None, description="reshape the feature columns to this shape, e.g. [8, 8, 1]")
    scale: float = Field(1.0, gt=0, description="divide features by this (e.g. 255 for pixels)")


class NpzData(FileData):
    """Arrays x and y (names configurable); optional x_test/y_test give a fixed test set."""

    source: Literal["npz"]
    x_key: str = Field("x", description="name of the inputs array (x_key + '_test' gives a fixed test set)")
    y_key: str = Field("y", description="name of the labels array")
    scale: float = Field(1.0, gt=0, description="divide inputs by this")


class TfrecordData(FileData):
    """tf.train.Example records: a raw float/uint8 image feature and an int64 label."""

    source: Literal["tfrecord"]
    image_key: str = Field("image", description="bytes feature holding the raw image")
    label_key: str = Field("label", description="int64 feature holding the class")
    shape: list[int] = Field(..., description="shape of one image, e.g. [28, 28, 1]")
    dtype: Literal["float32", "uint8"] = Field("uint8", description="element type of the raw image bytes")
    scale: float = Field(255.0, gt=0, description="divide pixel values by this")


class ImageFolderData(FileData):
    """One sub-folder per class with PNG/JPEG files; class names are the sorted folder names."""

    source: Literal["image_folder"]
    image_size: tuple[int, int] = Field((32, 32), description="[height, width] every image is resized to")
    image_channels: Literal[1, 3] = Field(3, description="1 (grayscale) or 3 (RGB)")


DataSpec = Annotated[
    DigitsData | OptdigitsData | GeneratedData | CsvData | NpzData | TfrecordData | ImageFolderData,
    Field(discriminator="source"),
]
DATA_SOURCES = ("digits", "optdigits", "generated", "csv", "npz", "tfrecord", "image_folder")


# ---------------------------------------------------------------------------------------------------------- train
class TrainSpec(StrictModel):
    epochs: int = Field(20, ge=1, description="passes over the training split")
    batch_size: int = Field(32, ge=1, description="examples per gradient step")
    optimizer: Literal["adam", "sgd", "rmsprop"] = Field("adam", description="the Keras optimizer")
    learning_rate: float = Field(1e-3, gt=0, description="the optimizer's learning rate")
    seed: int = Field(0, description="seeds weight initialisation and shuffling")
    mixed_precision: bool = Field(False, description="mixed_float16 where the hardware supports it")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop when val accuracy stalls this many epochs")
    workers: int = Field(1, ge=1, description="> 1 trains with MultiWorkerMirroredStrategy (a TFJob on the cluster)")


# ----------------------------------------------------------------------------------------------------------- tune
TUNABLE_TRAIN = ("learning_rate", "batch_size", "optimizer")
MODEL_PARAM_PREFIX = "model.params."


class SearchRange(StrictModel):
    """A numeric range to search; whole-number bounds on an integer hyperparameter give integers."""

    min: float = Field(..., description="lowest value")
    max: float = Field(..., description="highest value (> min)")
    sampling: Literal["linear", "log"] = Field("linear", description="log: even in log space (learning rates)")
    step: float | None = Field(None, gt=0, description="spacing between values, e.g. 16 for batch sizes")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.min >= self.max:
            raise ValueError(f"min {self.min:g} >= max {self.max:g}; give min < max, or a list to fix one value")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"log sampling needs min > 0 (got {self.min:g})")
        return self


class TuneSpec(StrictModel):
    """Hyperparameter search run before training (keras-tuner locally, Katib on the cluster); train uses the best."""

    algorithm: Literal["random", "bayesian", "hyperband"] = Field("random", description="the search strategy")
    max_trials: int | None = Field(
        None, ge=1, description="random, bayesian: configurations tried (default 10); hyperband's brackets set its own"
    )
    epochs: int = Field(5, ge=1, description="training epochs per trial (hyperband: the most any trial gets)")
    factor: int | None = Field(None, ge=2, description="hyperband: 1/factor of the trials go on to the next round (default 3)")
    objective: Literal["val_accuracy", "val_loss"] = Field("val_accuracy", description="the validation metric trials are ranked by")
    seed: int = Field(0, description="seeds the search; every trial's model starts from train.seed")
    space: dict[str, Any] = Field(
        ...,
        description="hyperparameter -> {min, max, sampling, step} or a list of choices; names: "
        f"{', '.join(TUNABLE_TRAIN)} or {MODEL_PARAM_PREFIX}<name>",
    )

    @field_validator("space")
    @classmethod
    def _valid_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("no hyperparameters to search; add one, e.g. learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}")
        return {name: check_search_entry(name, entry) for name, entry in value.items()}

    @model_validator(mode="after")
    def _algorithm_options(self) -> TuneSpec:
        if self.algorithm == "hyperband" and self.max_trials is not None:
            raise ValueError("max_trials does not apply to hyperband: its brackets set the trials from epochs and factor")
        if self.algorithm != "hyperband" and self.factor is not None:
            raise ValueError(f"factor applies to hyperband only, not to {self.algorithm}")
        return self


def check_search_entry(name: str, entry: Any) -> SearchRange | list[Any]:
    """One hyperparameter of a search space: a known name, a non-empty list or a valid range, values a train accepts."""
    if name not in TUNABLE_TRAIN and not re.fullmatch(re.escape(MODEL_PARAM_PREFIX) + r"[A-Za-z_]\w*", name):
        valid = [*TUNABLE_TRAIN, f"{MODEL_PARAM_PREFIX}<name>"]
        close = difflib.get_close_matches(name, [*TUNABLE_TRAIN, MODEL_PARAM_PREFIX], n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close and close[0] in TUNABLE_TRAIN else ""
        raise ValueError(f"unknown hyperparameter '{name}'; {hint}tunable: {', '.join(valid)}")
    if isinstance(entry, list):
        if not entry:
            raise ValueError(f"{name}: no choices; list at least one value, e.g. {name}: [a, b]")
        values = entry
    elif isinstance(entry, dict):
        try:
            entry = SearchRange.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(k) for k in first["loc"])
            raise ValueError(f"{name}{'.' + where if where else ''}: {first['msg'].removeprefix('Value error, ')}") from None
        values = [entry.min, entry.max]
    else:
        raise ValueError(f"{name}: give a range {{min: ..., max: ...}} or a list of choices, not {entry!r}")
    if name in TUNABLE_TRAIN:
        for candidate in values:  # each choice (or both bounds) must be a value train accepts
            try:
                TrainSpec.model_validate({name: candidate})
            except ValidationError as exc:
                raise ValueError(f"{name}: {candidate!r} is not a valid {name} ({exc.errors()[0]['msg']})") from None
    return entry


# ------------------------------------------------------------------------------------------- compress and targets
COMPRESSION_TECHNIQUES = ("prune", "cluster", "quantize", "distill")


class TechniqueSpec(BaseModel):
    """One compression step; its parameters are checked by that step's own config model."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    technique: str
    # `from` is a Python keyword, hence the alias. Default: the previous entry (or train), which makes a chain.
    source: str | None = Field(
        None,
        alias="from",
        description="the artifact this technique starts from: train or an earlier entry's name; default the previous entry",
    )

    @field_validator("technique")
    @classmethod
    def _known_technique(cls, value: str) -> str:
        if value not in COMPRESSION_TECHNIQUES:
            close = difflib.get_close_matches(value, COMPRESSION_TECHNIQUES, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(COMPRESSION_TECHNIQUES)}"
            raise ValueError(f"unknown technique '{value}'; {hint}")
        return value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})




class TargetSpec(StrictModel):
    format: str = Field(..., description="one of the target formats (saved_model, tflite_int8, onnx, ...)")
    on_unavailable: Literal["skip", "fail"] = Field("fail", description="what to do when the target's hardware is absent")
    options: dict[str, Any] = Field(default_factory=dict, description="format options, e.g. opset, int8 I/O")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"format": data} if isinstance(data, str) else data

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in TARGET_FORMATS:
            close = difflib.get_close_matches(value, TARGET_FORMATS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(TARGET_FORMATS)}"
            raise ValueError(f"unknown target format '{value}'; {hint}")
        return value


# ---------------------------------------------------------------------------------------------------------- gates
class Gates(StrictModel):
    """Accuracy values are fractions (0.95 = 95%); drops are fractions too (0.01 = 1 percentage point)."""

    min_accuracy: float | None = Field(None, ge=0, le=1, description="lowest test accuracy allowed")
    max_drop: float | None = Field(None, ge=0, le=1, description="accuracy drop allowed vs the trained (uncompressed) model")
    max_class_drop: float | None = Field(None, ge=0, le=1, description="largest drop allowed on any single class")
    min_agreement: float | None = Field(None, ge=0, le=1, description="share of test predictions equal to the parent's")
    max_size_bytes: int | None = Field(None, gt=0, description="size of the model files, uncompressed")
    max_latency_ms: float | None = Field(None, gt=0, description="batch-1 p95 latency")
    max_drop_vs_serving: float | None = Field(
        None, ge=0, le=1, description="accuracy drop allowed vs the currently published model (needs a push section)"
    )


class EvaluationSpec(StrictModel):
    latency_runs: int = Field(100, ge=5, description="timed batch-1 runs (after warm-up) for p50/p95")
    warmup_runs: int = Field(10, ge=0, description="untimed batch-1 runs before timing")
    batch_size: int = Field(256, ge=1, description="batch size for accuracy and throughput")
    threads: int = Field(
        1,
        ge=1,
        description="CPU threads every runtime computes with (TF intra/inter-op, TFLite, OpenVINO, onnxruntime), so "
        "latencies compare across runtimes and nodes; 1 = single-core, the edge-device case",
    )


# ----------------------------------------------------------------------------------------- storage, push, serving
class StorageSettings(StrictModel):
    """S3-compatible object storage. Unset values come from the standard AWS environment variables."""

    endpoint_url: str | None = Field(None, description="e.g. http://minio.storage:9000; default AWS_ENDPOINT_URL or AWS")
    region: str | None = Field(None, description="default AWS_REGION, else us-east-1")
    access_key_id: str | None = Field(None, description="prefer AWS_ACCESS_KEY_ID from a Secret over a value here")
    secret_access_key: str | None = Field(None, description="prefer AWS_SECRET_ACCESS_KEY from a Secret")


# StorageSettings fields that hold credentials: never echoed in an error, never compiled into a pipeline or a DAG.
CREDENTIAL_FIELDS = ("access_key_id", "secret_access_key")


class PushSpec(StrictModel):
    """Where blessed artifacts are published as numbered release bundles (<uri>/<model>/<version>/)."""

    uri: str | None = Field(None, description="s3://bucket/prefix or a local folder; default <run>/registry")
    model_name: str | None = Field(None, pattern=NAME_PATTERN, description="default: the workflow name")
    labels: list[str] = Field(
        default_factory=lambda: ["current"], description="registry labels moved to the new version once it is complete"
    )
    version: int | None = Field(None, ge=1, description="pin the version number (e.g. a CI build); default: next integer")
    require_all_blessed: bool = Field(False, description="refuse the push when any artifact is unblessed (default: skip those)")
    part_size_mb: int = Field(8, ge=5, le=512, description="multipart upload part size; memory use is about 10 parts")
    max_concurrency: int = Field(4, ge=1, le=32, description="parallel part uploads per file")
    retries: int = Field(5, ge=0, le=20, description="retries of a file upload after a transient error (backoff doubles)")

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: list[str]) -> list[str]:
        for label in value:
            if not re.fullmatch(NAME_PATTERN, label):
                raise ValueError(f"label {label!r}: use lower-case letters, digits, '-' or '_'")
        return value


class KServeSpec(StrictModel):
    """A KServe InferenceService per model: TF Serving runtime for a SavedModel, OpenVINO Model Server for an IR."""

    namespace: str = Field("modelpress", description="namespace of the InferenceService")
    service_account: str = Field(
        "modelpress-runner", description="ServiceAccount of the predictor; its S3 credentials let KServe read storageUri"
    )
    canary_traffic_percent: int = Field(10, ge=1, le=99, description="share of requests the new release gets until promoted")
    apply: bool = Field(False, description="apply it on the cluster (in-cluster account or kubeconfig); false: write the manifest only")
    ready_timeout_s: float = Field(600.0, gt=0, description="how long to wait for the new revision to become Ready")


class ServingSpec(StrictModel):
    """How the final model is served: a TF Serving base path, with gRPC/REST addresses to reload and test, or KServe.

    kind tfserving (the default) writes the base path TF Serving polls; kind kserve an InferenceService."""

    kind: Literal["tfserving", "kserve"] = Field("tfserving", description="TF Serving base path (default) or a KServe InferenceService")
    kserve: KServeSpec = Field(default_factory=KServeSpec, description="kind kserve: where and how the InferenceService rolls out")

    base_path: str | None = Field(None, description="model base path TF Serving polls; default <run>/serving")
    mount_path: str | None = Field(
        None, description="the base path as the TF Serving container sees it (e.g. /models); default: base_path"
    )
    model_name: str | None = Field(None, pattern=NAME_PATTERN, description="default: push.model_name, else the workflow name")
    grpc_address: str | None = Field(None, description="host:port of TF Serving's gRPC API; unset: write files only")
    rest_address: str | None = Field(None, description="http://host:port of TF Serving's REST API; set: status and Predict use REST")
    timeout_s: float = Field(120.0, gt=0, description="how long to wait for the new version to become AVAILABLE")
    tolerance: float = Field(1e-4, ge=0, description="largest absolute difference allowed between served and validated outputs")


class Toleration(StrictModel):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class ClusterSpec(StrictModel):
    """Where steps run on Kubernetes. Both adapters (KFP, Airflow) and infra/ read these same values."""

    namespace: str = Field("modelpress", description="Kubernetes namespace of the step pods")
    service_account: str = Field("modelpress-runner", description="ServiceAccount the step pods run as")
    image_repository: str | None = Field(None, description="default: MODELPRESS_IMAGE_REPOSITORY or ghcr.io/modelpress")
    image_tag: str | None = Field(
        None, description="tag of every image instead of the version: the derived images `modelpress images --with PKG` builds"
    )
    platform: Literal["kubeflow", "vertex"] = Field(
        "kubeflow", description="where compiled pipelines run: Kubeflow Pipelines on Kubernetes, or Vertex AI Pipelines"
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource a GPU step requests (limit 1)")
    gpu_accelerator: str = Field(
        "NVIDIA_TESLA_T4", description="platform vertex only: Vertex AI's accelerator type for GPU steps (Kubeflow requests gpu_resource)"
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"modelpress.io/pool": "gpu"}, description="node labels GPU steps are scheduled on"
    )
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="taints of the GPU pool that GPU steps tolerate",
    )
    cpu_node_selector: dict[str, str] = Field(default_factory=dict, description="node labels for CPU-only steps")
    secret_name: str = Field("modelpress-s3", description="Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    training_operator: Literal["trainer", "tfjob"] = Field(
        "trainer",
        description="what runs train.workers > 1: a Kubeflow Trainer v2 TrainJob (infra/trainer) or a Training Operator v1 TFJob",
    )


SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually")
# Cron fields: name, lowest, highest, names allowed in place of numbers.
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def check_schedule(value: str) -> None:
    """Accept an Airflow preset or a five-field cron expression; raise ValueError naming the bad part."""
    if value.startswith("@"):
        if value not in SCHEDULE_PRESETS:
            close = difflib.get_close_matches(value, SCHEDULE_PRESETS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(SCHEDULE_PRESETS)}"
            raise ValueError(f"unknown schedule preset '{value}'; {hint}")
        return
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule '{value}' has {len(fields)} fields; write a preset (@daily) or cron 'minute hour day month weekday'"
        )
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                raise ValueError(f"schedule '{value}': step '{step}' in the {name} field is not a number")
            bounds = [] if base == "*" else base.split("-", 1)
            for bound in bounds:
                number = names.index(bound.lower()) + low if bound.lower() in names else None
                if number is None and not bound.isdigit():
                    raise ValueError(f"schedule '{value}': '{part}' is not valid in the {name} field ({low}-{high})")
                if not low <= (number if number is not None else int(bound)) <= high:
                    raise ValueError(f"schedule '{value}': {bound} is out of range for the {name} field ({low}-{high})")


class Workflow(StrictModel):
    name: str = Field(..., pattern=NAME_PATTERN, description="lower-case name; also the DAG id and model name")
    description: str = Field("", description="free text shown in the DAG and pipeline UIs")
    model: ModelSpec = Field(..., description="the architecture: a zoo model or your own builder")
    data: DataSpec = Field(..., description="where the examples come from and how they are split")
    train: TrainSpec = Field(default_factory=TrainSpec, description="how the model is trained")
    tune: TuneSpec | None = Field(None, description="search train's hyperparameters first; train uses the best trial")
    compress: list[TechniqueSpec] = Field(
        default_factory=list, description="compression techniques applied in order (prune, cluster, quantize, distill)"
    )
    targets: list[TargetSpec] = Field(
        default_factory=lambda: [TargetSpec(format="saved_model")], description="formats to convert the final model to"
    )
    gates: Gates = Field(default_factory=Gates, description="what an artifact must meet to be blessed")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="how artifacts are measured")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="S3-compatible object storage settings")
    push: PushSpec | None = Field(None, description="publish blessed artifacts as a release bundle")
    serving: ServingSpec | None = Field(None, description="deploy the final model to TensorFlow Serving")
    schedule: str | None = Field(None, description="cron expression or preset (@daily, @weekly) for the Airflow DAG")
    asset: str | None = Field(
        None, description="data URI (e.g. s3://bucket/drops/digits) whose updates trigger the Airflow DAG (data-aware scheduling)"
    )
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="where steps run on Kubernetes")

    @model_validator(mode="after")
    def _publishing_names(self) -> Workflow:
        """Push and serving name the model after the workflow unless told otherwise; the gate vs serving needs push."""
        if self.push is not None and self.push.model_name is None:
            self.push.model_name = self.name
        if self.serving is not None and self.serving.model_name is None:
            self.serving.model_name = self.push.model_name if self.push is not None else self.name
        if self.gates.max_drop_vs_serving is not None and self.push is None:
            raise ValueError("gates.max_drop_vs_serving compares with the published model; add a push section (push: {})")
        return self

    @field_validator("tune")
    @classmethod
    def _tune_fits_model_and_data(cls, value: TuneSpec | None, info: ValidationInfo) -> TuneSpec | None:
        """Trials are ranked on the validation split; tuned model parameters must be ones the zoo model takes."""
        if value is None:
            return value
        data, model = info.data.get("data"), info.data.get("model")
        if data is not None and data.split.val == 0:
            raise ValueError("tune ranks trials on the validation split, which is empty; set data.split.val > 0, e.g. 0.1")
        if model is not None and model.zoo is not None:  # a builder's parameters are checked when it is built
            from .models import ZOO, _check_params

            tuned = {n.removeprefix(MODEL_PARAM_PREFIX): None for n in value.space if n.startswith(MODEL_PARAM_PREFIX)}
            try:
                _check_params(ZOO[model.zoo], tuned, model.zoo)
            except UserError as exc:
                raise ValueError(f"space: {exc}") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            check_schedule(value)
        return value

    @field_validator("asset")
    @classmethod
    def _asset_uri(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", value):
            raise ValueError(f"asset '{value}' must be a URI like s3://bucket/prefix or file:///data/drops")
        return value

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: list[TargetSpec]) -> list[TargetSpec]:
        names = [t.format for t in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target {dupes[0]} is listed twice; list each format once")
        return value


# ------------------------------------------------------------------------------------------------------- loading
# Bounds on what a workflow file may make the parser do: a YAML file is input from users and from DAG folders.
MAX_WORKFLOW_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # after aliases are expanded: an alias bomb is a few lines that expand to billions
MAX_YAML_DEPTH = 64
MAX_YAML_INT_DIGITS = 19  # 64-bit integers; anything longer is a typo or an attack, never a setting


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses integers beyond 64 bits instead of building (or refusing with a traceback)
    arbitrarily large ones."""

    def construct_yaml_int(self, node):
        digits = node.value.replace("_", "").lstrip("+-")
        if len(digits) > MAX_YAML_INT_DIGITS + 2:  # 0x/0o/0b prefixes
            raise yaml.constructor.ConstructorError(None, None, f"integer {node.value[:24]}... is too large", node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value) >= 2**63:
            raise yaml.constructor.ConstructorError(None, None, f"integer {node.value[:24]} is too large", node.start_mark)
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def check_yaml_size(node: yaml.Node) -> None:
    """Refuse a document whose alias-expanded size or nesting exceeds the bounds, before anything is constructed."""
    expanded: dict[int, int] = {}  # node id -> nodes it expands to (aliases point at shared node objects)
    open_nodes: set[int] = set()

    def size(current: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        if id(current) in open_nodes:
            raise UserError(f"line {current.start_mark.line + 1}: an alias refers to the value that contains it")
        if id(current) in expanded:
            return expanded[id(current)]
        open_nodes.add(id(current))
        children = []
        if isinstance(current, yaml.SequenceNode):
            children = current.value
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_YAML_NODES:
            raise UserError(f"expands to more than {MAX_YAML_NODES:,} values (anchors and aliases included)")
        open_nodes.discard(id(current))
        expanded[id(current)] = total
        return total

    size(node, 0)


def parse_yaml(text: str, where: str) -> Any:
    """The data of a YAML document within the bounds; every problem is one line naming `where` and the line."""
    try:
        node = yaml.compose(text, Loader=BoundedLoader)
        if node is None:
            return None
        try:
            check_yaml_size(node)
        except UserError as exc:
            raise UserError(f"{where}: {exc}; simplify the file") from None
        loader = BoundedLoader(text)
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{where}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc}); fix the syntax") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read; simplify the file") from None


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow YAML file; every problem is a UserError naming file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"workflow file {path} not found; pass the path of a workflow YAML (see examples/)")
    if path.stat().st_size > MAX_WORKFLOW_BYTES:
        raise UserError(f"{path} is {path.stat().st_size:,} bytes; a workflow is at most {MAX_WORKFLOW_BYTES:,} bytes of YAML")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save the workflow as UTF-8 YAML") from None
    data = parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise UserError(f"{path}: a workflow is a YAML mapping with keys like name, model, data; see examples/")
    workflow = parse_workflow(data, source=str(path), text=text)
    from .plan import build_plan  # the plan module imports this one

    try:  # step parameters, `from:` references: what only the plan can check
        build_plan(workflow)
    except UserError as exc:
        line = yaml_line(text, list(exc.keys)) if exc.keys else None
        raise UserError(f"{path}{f' line {line}' if line else ''}: {exc}") from None
    return workflow


def parse_workflow(data: dict[str, Any], source: str = "workflow", text: str | None = None) -> Workflow:
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, data, source, text)) from None


def describe_validation_error(exc: ValidationError, data: Any, source: str, text: str | None) -> str:
    """One line for the first problem: where it is (file, line, dotted key) and what to do."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    keys = input_path(data, first["loc"])
    dotted = ".".join(str(k) for k in keys) or "(top level)"
    line = yaml_line(text, keys) if text else None
    where = f"{source}" + (f" line {line}" if line else "")
    message = first["msg"].removeprefix("Value error, ")
    unknown = re.match(r"unknown key '([^']*)'", message)
    if unknown:  # point at the offending key's own line
        line = yaml_line(text, [*keys, unknown.group(1)]) if text else line
        where = f"{source}" + (f" line {line}" if line else "")
    if first["type"] == "union_tag_invalid":
        tag, expected = first["ctx"]["tag"], [t.strip(" '") for t in first["ctx"]["expected_tags"].split(",")]
        close = difflib.get_close_matches(tag, expected, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(expected)}"
        message = f"unknown {first['ctx']['discriminator'].strip(chr(39))} '{tag}'; {hint}"
    elif first["type"] == "string_pattern_mismatch" and first["ctx"].get("pattern") == NAME_PATTERN:
        message = f"use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit (got {first['input']!r})"
    elif first["type"] == "missing":
        message = f"required key '{keys[-1] if keys else first['loc'][-1]}' is missing"
        dotted = ".".join(str(k) for k in keys[:-1]) or "(top level)"
    elif first["type"] not in ("value_error", "assertion_error") and "input" in first:
        shown = "a value not shown: it is a credential" if keys and keys[-1] in CREDENTIAL_FIELDS else repr(first["input"])
        message = f"{message} (got {shown})"
    more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {dotted}: {message}{more}"


def input_path(data: Any, loc: tuple) -> list:
    """The loc without pydantic's union tags: only the keys and indexes that exist in the user's data."""
    path, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(part, str) and part not in ("function-after", "function-before") and not part.startswith(
            tuple(DATA_SOURCES)
        ):
            path.append(part)  # a missing key: name it
            node = None
    return path


def yaml_line(text: str, keys: list) -> int | None:
    """1-based line of the deepest key in `keys` that the YAML text contains."""
    try:
        node = yaml.compose(text, Loader=BoundedLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def spec_hash(model: BaseModel) -> str:
    """Stable sha256 of a config: what a step ran with, recorded in its artifact."""
    import hashlib

    return hashlib.sha256(model.model_dump_json(exclude_none=False).encode()).hexdigest()


class StepConfig(StrictModel):
    """Base of every step's config: what `modelpress step NAME --config JSON` accepts."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
