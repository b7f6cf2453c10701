"""The data section: where examples come from (bundled sets, generated, files local or s3://) and their split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelpress.contract.schema import StrictModel


class SplitSpec(StrictModel):
    val: float = Field(0.1, ge=0.0, lt=1.0, description="share of training rows held out for validation")
    test: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows held out for test (sources without a fixed test set)")
    seed: int = Field(0, description="seed of the shuffled split")
    by: Literal["stratified", "key_hash"] | None = Field(
        None,
        description="stratified (per-class shares; needs every label first) or key_hash (each record's split from a "
        "hash of its key: shard name and position, or data.key_feature; stable as data grows). Default: stratified "
        "for data read into memory, key_hash for streamed data",
    )

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.val + self.test >= 0.9:
            raise ValueError(f"val + test = {self.val + self.test:.2f} leaves too little to train on; keep it below 0.9")
        return self


class DataBase(StrictModel):
    resize: tuple[int, int] | None = Field(None, description="[height, width] to resize images to")
    channels: Literal[1, 3] | None = Field(None, description="force 1 (grayscale) or 3 (RGB, repeated) channels")
    split: SplitSpec = Field(default_factory=SplitSpec, description="train/val/test shares and seed (see data.split)")

    @model_validator(mode="after")
    def _split_rule_fits_the_source(self) -> DataBase:
        sharded = isinstance(self, ShardedData)
        if self.split.by == "key_hash" and not sharded:
            raise ValueError("split.by key_hash needs records with keys: use it with tfrecord or image_folder data")
        if sharded and self.streaming is not None and self.split.by == "stratified":
            raise ValueError(
                "a stratified split must see every label before splitting, which a stream cannot; "
                "use split.by key_hash (the default when streaming) or give data.test_path"
            )
        return self


class StreamingSpec(StrictModel):
    """Reading shards as a stream: memory is bounded by these settings, not by the data set's size."""

    shuffle_buffer: int = Field(
        10_000, ge=1, description="training records held for shuffling (serialized, before decoding): the main memory cost"
    )
    parallel_reads: int = Field(4, ge=1, le=64, description="shards (or image files) read at once, interleaved")
    prefetch_batches: int = Field(2, ge=1, description="decoded batches prepared ahead of the model")


class ShardedData(StrictModel):
    """Sources made of many files, which can be streamed (data.streaming) instead of read into memory."""

    streaming: StreamingSpec | None = Field(
        None, description="stream the shards with bounded memory (for data larger than memory); unset: read into memory"
    )
    test_path: str | None = Field(
        None, description="shards (local or s3://, folder, prefix or glob) holding the test set; default: split from path"
    )
    val_path: str | None = Field(None, description="shards holding the validation set; default: split from path")


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
    noise: float = Field(0.6, ge=0, description="standard deviation of the pixel noise before squashing; higher is harder to learn")
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


class TfrecordData(FileData, ShardedData):
    """tf.train.Example records: a raw float/uint8 image feature and an int64 label. path: one file, a folder, a
    prefix or a glob of shards (e.g. s3://bucket/train-*.tfrecord)."""

    source: Literal["tfrecord"]
    image_key: str = Field("image", description="bytes feature holding the raw image")
    label_key: str = Field("label", description="int64 feature holding the class")
    shape: list[int] = Field(..., description="shape of one image, e.g. [28, 28, 1]")
    dtype: Literal["float32", "uint8"] = Field("uint8", description="element type of the raw image bytes")
    scale: float = Field(255.0, gt=0, description="divide pixel values by this")
    key_feature: str | None = Field(
        None, description="bytes feature naming each record, for split.by key_hash; default: shard name and position"
    )


class ImageFolderData(FileData, ShardedData):
    """One sub-folder per class with PNG/JPEG files; class names are the sorted folder names."""

    source: Literal["image_folder"]
    image_size: tuple[int, int] = Field((32, 32), description="[height, width] every image is resized to")
    image_channels: Literal[1, 3] = Field(3, description="1 (grayscale) or 3 (RGB)")


DataSpec = Annotated[
    DigitsData | OptdigitsData | GeneratedData | CsvData | NpzData | TfrecordData | ImageFolderData,
    Field(discriminator="source"),
]
DATA_SOURCES = ("digits", "optdigits", "generated", "csv", "npz", "tfrecord", "image_folder")

