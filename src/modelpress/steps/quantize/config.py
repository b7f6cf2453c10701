import difflib

from pydantic import Field, field_validator

from modelpress.contract.data_sources import DataSpec
from modelpress.contract.formats import POST_TRAINING_TARGETS
from modelpress.contract.training import TrainSpec
from modelpress.ml.keras_artifact import KerasInputConfig

# Quantization-aware training modes: what the fine-tuning keeps besides learning INT8 ranges.
QAT_MODES = {
    "qat": "plain quantization-aware training",
    "pqat": "QAT that keeps the parent's zeros (pruned parent)",
    "cqat": "QAT that keeps the parent's clusters (clustered parent)",
    "pcqat": "QAT that keeps zeros and clusters (pruned then clustered parent)",
    "auto": "pqat, cqat, pcqat or qat, from what the parent is",
}
# Post-training modes are TFLite conversions of the final model: the plan turns them into these convert targets.


class QuantizeConfig(KerasInputConfig):
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec, description="the workflow's batch size, optimizer and seed")
    mode: str = Field(
        "auto",
        description="qat, pqat, cqat, pcqat or auto (quantization-aware training); dynamic, int8 or fp16 (post-training, "
        "done by the TFLite conversion)",
    )
    epochs: int = Field(2, ge=1, description="quantization-aware fine-tuning epochs")
    learning_rate: float = Field(1e-5, gt=0, description="fine-tuning learning rate: low, the INT8 ranges are learnt from activations, not by gradient")

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        modes = [*QAT_MODES, *POST_TRAINING_TARGETS]
        if value not in modes:
            close = difflib.get_close_matches(value, modes, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"unknown quantize mode '{value}'; {hint}modes: {', '.join(QAT_MODES)} (training) "
                f"or {', '.join(POST_TRAINING_TARGETS)} (post-training)"
            )
        return value
