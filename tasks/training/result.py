"""What a training run returns and leaves in `<output_dir>/metrics.json` (docs/training.md#outputs).

Apart from tasks/training/run.py (no torch or TRL import), so the report reads metrics.json in
the same types without loading a trainer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.training.config import PresetName

METRICS_FILE = "metrics.json"


class CurvePoint(BaseModel):
    """One logged training step."""

    step: int
    loss: float
    learning_rate: float | None = None
    reward_accuracy: float | None = Field(default=None, description="DPO: share of pairs whose "
                                          "chosen reward exceeds the rejected one.")
    reward_margin: float | None = Field(default=None, description="DPO: mean chosen − rejected reward.")

    @classmethod
    def from_log(cls, entry: dict[str, Any]) -> CurvePoint:
        return cls(step=entry["step"], loss=entry["loss"], learning_rate=entry.get("learning_rate"),
                   reward_accuracy=entry.get("rewards/accuracies"),
                   reward_margin=entry.get("rewards/margins"))


class TrainResult(BaseModel):
    """What a run returns (metrics.json holds this plus the recipe and TRL's full log)."""

    kind: Literal["sft", "dpo"]
    preset: PresetName
    base_model: str = Field(description="The recipe's `model`: tiny, a directory or a Hub id.")
    model_dir: str = Field(description="The trained model and tokenizer (= the recipe's output_dir).")
    metrics_path: str
    columns: list[str] = Field(description="The dataset columns handed to the trainer.")
    train_rows: int = Field(description="Exported rows of the train split.")
    train_examples: int = Field(description="Examples after TRL's preparation: packed blocks (SFT "
                                            "with packing), pairs kept (DPO drops those whose "
                                            "prompt alone fills max_length).")
    eval_rows: int
    steps: int
    first_loss: float | None = Field(description="None when no step was logged.")
    last_loss: float | None
    loss_curve: list[CurvePoint]
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]

