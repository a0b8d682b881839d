"""Flows `sft` and `dpo`: train on the exported sets with TRL, zephyr-7b-beta style
(docs/training.md).

Reads: an exported set (a `save_to_disk` directory or Parquet files per split) and a model
(`tiny`, a local directory, or a Hub id; DPO starts from the `sft` flow's output directory).
Writes: `<output_dir>/` with the model, the tokenizer (chat template included) and metrics.json.
Publishes a progress artifact while training and a summary with the loss curve.

The narrative: resolve the recipe (preset + overrides) → train (read the splits, apply the chat
template, TRL trainer, evaluate, save) → summary.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.training.config import DPOTraining, PresetName, SFTTraining, TrainRecipe
from tasks.training.result import TrainResult

# tasks.training.run and .report import torch, transformers and TRL (~15 s): they are imported
# where a flow trains, not where it is only loaded (`ultraforge deploy`, the CLI's validation).


class TrainParams(BaseModel):
    """A preset plus what has no preset value, and overrides of any recipe key."""

    recipe_type: ClassVar[type[TrainRecipe]]

    preset: PresetName = Field(default="zephyr",
                               description="`zephyr` (the zephyr-7b-beta run) or `current` (the "
                                           "fixed alignment-handbook recipe).")
    dataset: str = Field(description="The exported set: a save_to_disk directory or Parquet per split.")
    output_dir: str = Field(description="Where the model, tokenizer and metrics.json go.")
    model: str | None = Field(default=None, description="`tiny`, a local model directory or a Hub "
                                                         "id; None: the preset's base model.")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="Recipe keys to override, e.g. {\"max_steps\": 20}.")

    def load(self) -> TrainRecipe:
        """The validated recipe (ConfigError naming each bad key)."""
        given = {"dataset": self.dataset, "output_dir": self.output_dir}
        if self.model is not None:
            given["model"] = self.model
        return self.recipe_type.from_preset(self.preset, {**given, **self.overrides})


class SFTParams(TrainParams):
    """Parameters of the `sft` flow."""

    recipe_type: ClassVar[type[TrainRecipe]] = SFTTraining


class DPOParams(TrainParams):
    """Parameters of the `dpo` flow; `model` is required (the `sft` flow's output directory)."""

    recipe_type: ClassVar[type[TrainRecipe]] = DPOTraining

    model: str = Field(description="The SFT model to start from: the `sft` flow's output "
                                   "directory (or a Hub id).")


@task(name="sft-train", cache_policy=NO_CACHE)
def sft_train(recipe: SFTTraining) -> TrainResult:
    """SFTTrainer on the recipe's train split, with a progress artifact."""
    from tasks.training.report import ProgressCallback
    from tasks.training.run import train_sft

    return train_sft(recipe, callbacks=[ProgressCallback("SFT training")])


@task(name="dpo-train", cache_policy=NO_CACHE)
def dpo_train(recipe: DPOTraining) -> TrainResult:
    """DPOTrainer on the recipe's train split, with a progress artifact."""
    from tasks.training.report import ProgressCallback
    from tasks.training.run import train_dpo

    return train_dpo(recipe, callbacks=[ProgressCallback("DPO training")])


@flow(name="sft")
def sft(params: SFTParams) -> TrainResult:
    """Exported SFT set → Zephyr chat template → TRL SFTTrainer → model, tokenizer, metrics."""
    from tasks.training.report import publish_training

    result = sft_train(params.load())
    publish_training(result)
    return result


@flow(name="dpo")
def dpo(params: DPOParams) -> TrainResult:
    """SFT model + exported preference pairs → TRL DPOTrainer → model, tokenizer, metrics."""
    from tasks.training.report import publish_training

    result = dpo_train(params.load())
    publish_training(result)
    return result
