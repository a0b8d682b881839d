"""Flow `pipeline`: the whole factory end to end, as one deployment run
(docs/operations.md#pipeline).

Raw sets (`ultrafeedback`, `ultrachat`) → derived sets (`export-sft`, `export-dpo`) → the
translated versions of the sets chosen (`translate`) → optionally training (`sft`, then `dpo`
from the SFT model) → `report`, whose link artifact ends the run. Each stage is the same flow
its own deployment runs, here a subflow with its own typed parameters, so a stage run alone and
in the pipeline do the same work; every stage reads what the one before landed in the lake, and
a rerun pays only for what did not land.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.derived import DPOExportParams, SFTExportParams, dpo_export, sft_export
from flows.report import ReportParams, report
from flows.translate import TranslateParams, translate
from flows.ultrachat import UltraChatParams, ultrachat
from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
from tasks.adapters.resources import current
from tasks.core.shards import ScaleOut
from tasks.core.translate.fields import SetKind
from tasks.training.config import PresetName


class TranslateStage(BaseModel):
    """Which sets get another language."""

    model_config = ConfigDict(extra="forbid")

    sets: list[SetKind] = Field(default_factory=lambda: ["ultrafeedback", "ultrachat", "sft", "dpo"],
                                description="The sets to translate (none: skip the stage).")
    lang: str = Field(default="ja", description="Target language code.")
    overrides: list[str] = Field(default_factory=list, description="`key.path=value` overrides "
                                 "of the translate recipe for every set (e.g. limit=50).")
    scale: ScaleOut = Field(default_factory=ScaleOut, description="Each set's blocks shared "
                            "with child runs on the work pool (docs/operations.md#scale-out).")


class TrainStage(BaseModel):
    """SFT on the SFT set, then DPO from that model on the DPO set."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Train after the sets are built.")
    preset: PresetName = Field(default="zephyr", description="`zephyr` or `current` (docs/training.md).")
    model: str | None = Field(default=None, description="`tiny`, a local model directory or a Hub "
                              "id; None: the preset's base model.")
    sft_overrides: dict[str, Any] = Field(default_factory=dict, description="SFT recipe keys.")
    dpo_overrides: dict[str, Any] = Field(default_factory=dict, description="DPO recipe keys.")


class PipelineParams(BaseModel):
    """Every stage's parameters; each defaults to its bundled recipe."""

    model_config = ConfigDict(extra="forbid")

    ultrafeedback: UltraFeedbackParams = Field(default_factory=UltraFeedbackParams)
    ultrachat: UltraChatParams = Field(default_factory=UltraChatParams)
    sft: SFTExportParams = Field(default_factory=SFTExportParams)
    dpo: DPOExportParams = Field(default_factory=DPOExportParams)
    translate: TranslateStage = Field(default_factory=TranslateStage)
    train: TrainStage = Field(default_factory=TrainStage)
    report: ReportParams = Field(default_factory=ReportParams)


class PipelineRun(BaseModel):
    """Where each stage's output landed."""

    ultrafeedback: str
    ultrachat: str
    sft: str
    dpo: str
    translated: dict[str, str]
    models: dict[str, str]
    report: str


@flow(name="pipeline")
def pipeline(params: PipelineParams | None = None) -> PipelineRun:
    """Raw sets → derived sets → translations → (training) → report."""
    params = params or PipelineParams()
    feedback = ultrafeedback(params.ultrafeedback)
    chat = ultrachat(params.ultrachat)
    sft_set = sft_export(params.sft)
    dpo_set = dpo_export(params.dpo)
    stage = params.translate
    translated = {kind: translate(TranslateParams(set=kind, lang=stage.lang, scale=stage.scale,
                                                  overrides=stage.overrides)).folder
                  for kind in stage.sets}
    models = _train(params.train, sft_set.published.dataset_dict,
                    dpo_set.published.dataset_dict) if params.train.enabled else {}
    page = report(params.report)
    return PipelineRun(ultrafeedback=feedback.parquet, ultrachat=chat["exports"]["raw_parquet"],
                       sft=sft_set.published.dataset_dict, dpo=dpo_set.published.dataset_dict,
                       translated=translated, models=models, report=page.link)


def _train(stage: TrainStage, sft_set: str, dpo_set: str) -> dict[str, str]:
    """SFT, then DPO from its model; the model directories (under the data dir's models/)."""
    from flows.train import DPOParams, SFTParams, dpo, sft

    models = current().settings.data_dir.resolve() / "models"
    sft_run = sft(SFTParams(preset=stage.preset, dataset=sft_set, output_dir=str(models / "sft"),
                            model=stage.model, overrides=stage.sft_overrides))
    dpo_run = dpo(DPOParams(preset=stage.preset, dataset=dpo_set, output_dir=str(models / "dpo"),
                            model=sft_run.model_dir, overrides=stage.dpo_overrides))
    return {"sft": sft_run.model_dir, "dpo": dpo_run.model_dir}
