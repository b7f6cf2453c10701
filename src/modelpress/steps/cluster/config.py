from typing import Literal

from pydantic import Field, field_validator

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.training import TrainSpec
from modelpress.ml.keras_artifact import KerasInputConfig

# Centroid initialisation name in the spec -> tfmot.clustering.keras.CentroidInitialization member.
CENTROID_INITS = {"linear": "LINEAR", "kmeans++": "KMEANS_PLUS_PLUS", "density": "DENSITY_BASED", "random": "RANDOM"}


class ClusterConfig(KerasInputConfig):
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec, description="the workflow's batch size, optimizer and seed")
    clusters: int = Field(16, description="k: each clustered kernel keeps at most k distinct values")
    init: Literal[tuple(CENTROID_INITS)] = Field("kmeans++", description="centroid initialisation")
    layers: list[str] | None = Field(None, description="layers to cluster; default: every layer with a kernel")
    preserve_sparsity: bool | None = Field(
        None, description="keep zero weights zero; default: on when the parent is sparse (pruned)"
    )
    epochs: int = Field(3, ge=0, description="fine-tuning epochs with the clusters in place")
    learning_rate: float = Field(3e-4, gt=0, description="fine-tuning learning rate (lower than training's)")

    @field_validator("clusters")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"clusters must be at least 2 (got {value}): one cluster gives every weight of a layer the same value")
        return value
