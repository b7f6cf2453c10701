"""The workflow spec: one YAML file describes model, data, training, compression, targets, gates, push, serving.

Validated by pydantic. Every mistake becomes one line naming the file, the line, the key and the fix
(`modelpress check` prints exactly that). This package imports no TensorFlow: DAG files and the KFP compiler load
specs too. What only the plan can check (step parameters, model parameters, references) is checked by
`execution.plan.load_workflow`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from modelpress.common.errors import UserError
from modelpress.common.names import NAME_PATTERN
from modelpress.contract.compression import EvaluationSpec, Gates, TargetSpec, TechniqueSpec
from modelpress.contract.data_sources import DataSpec
from modelpress.contract.formats import of_family
from modelpress.contract.kubernetes import KubernetesSpec
from modelpress.contract.publishing import PushSpec, ServingSpec
from modelpress.contract.schedule import check_schedule
from modelpress.contract.schema import StorageSettings, StrictModel
from modelpress.contract.search import SearchSpec
from modelpress.contract.training import ModelSpec, TrainSpec, TuneSpec
from modelpress.contract.yaml_input import MAX_WORKFLOW_BYTES, describe_validation_error, parse_yaml

# `cluster:` meant Kubernetes here and weight clustering in compress; the section is `kubernetes:` since 0.2.
RENAMED_CLUSTER_SECTION = "renamed key 'cluster': the section is now called 'kubernetes' (same keys); rename 'cluster:' to 'kubernetes:'"


class Workflow(StrictModel):
    name: str = Field(..., pattern=NAME_PATTERN, description="lower-case name; the default model name of push and serving (the Airflow DAG id is the workflow file name)")
    description: str = Field("", description="free text shown in the DAG and pipeline UIs")
    model: ModelSpec = Field(..., description="the architecture: a zoo model or your own builder")
    data: DataSpec = Field(..., description="where the examples come from and how they are split")
    train: TrainSpec = Field(default_factory=TrainSpec, description="how the model is trained")
    tune: TuneSpec | None = Field(None, description="search train's hyperparameters first; train uses the best trial")
    compress: list[TechniqueSpec] = Field(
        default_factory=list, description="compression techniques applied in order (prune, cluster, quantize, distill)"
    )
    search: SearchSpec | None = Field(
        None,
        description="instead of compress: try a ladder of recipes cheapest first until one meets a size or latency target "
        "within the gates; push and deploy publish the artifact it selects",
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
        None,
        description="Airflow Asset URI (e.g. s3://bucket/drops/digits) whose events trigger the DAG: a task with it as "
        "outlet succeeded (a data-landing DAG, another workflow's push at <push.uri>/<model>) or an AssetWatcher fired",
    )
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec, description="where steps run on Kubernetes")

    @model_validator(mode="before")
    @classmethod
    def _renamed_sections(cls, data: Any) -> Any:
        """Sections renamed since earlier releases: one line saying the new name instead of an unknown key."""
        if isinstance(data, dict) and "cluster" in data:
            raise ValueError(RENAMED_CLUSTER_SECTION)
        return data

    @model_validator(mode="after")
    def _publishing_names(self) -> Workflow:
        """Push and serving name the model after the workflow unless told otherwise; the gate vs serving needs push."""
        if self.push is not None and self.push.model_name is None:
            self.push.model_name = self.name
        if self.serving is not None and self.serving.model_name is None:
            self.serving.model_name = self.push.model_name if self.push is not None else self.name
        if self.gates.max_drop_vs_serving is not None and self.push is None:
            raise ValueError("gates.max_drop_vs_serving compares with the published model; add a push section (push: {})")
        if self.search is not None and self.serving is not None:
            check_search_serves(self.search, self.serving)
        return self

    @field_validator("search")
    @classmethod
    def _search_or_compress(cls, value: SearchSpec | None, info: ValidationInfo) -> SearchSpec | None:
        if value is not None and info.data.get("compress"):
            raise ValueError("search tries its own recipes: move the compress entries into a rung of search.ladder, or remove search")
        return value

    @field_validator("tune")
    @classmethod
    def _tune_fits_model_and_data(cls, value: TuneSpec | None, info: ValidationInfo) -> TuneSpec | None:
        """Trials are ranked on the validation split (the plan checks the tuned model parameters)."""
        if value is None:
            return value
        data = info.data.get("data")
        if data is not None and data.split.val == 0:
            raise ValueError("tune ranks trials on the validation split, which is empty; set data.split.val > 0, e.g. 0.1")
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


def check_search_serves(search: SearchSpec, serving: ServingSpec) -> None:
    """Deploy serves the artifact the search selects: the target must name a format the serving kind runs."""
    servable = ("saved_model", *(of_family("openvino") if serving.kind == "kserve" else ()))
    if search.target.format not in servable:
        raise ValueError(
            f"serving deploys the artifact the search selects, and {serving.kind} runs {', '.join(servable)}: "
            f"set search.target.format to {' or '.join(servable)}, or remove serving"
        )


def read_workflow(path: str | Path) -> tuple[Workflow, str]:
    """Read a workflow YAML file and validate its schema: (workflow, text). Every problem is a UserError naming file,
    line and key. `execution.plan.load_workflow` adds what only the plan can check."""
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
    return parse_workflow(data, source=str(path), text=text), text


def parse_workflow(data: dict[str, Any], source: str = "workflow", text: str | None = None) -> Workflow:
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, data, source, text)) from None

