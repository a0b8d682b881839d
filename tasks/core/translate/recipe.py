"""The translate recipe: which landed or exported set, into which language, how (docs/translation.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.translate.fields import SetKind
from tasks.core.translate.work import TranslationSpec
from tasks.core.ultrafeedback.recipe import BatchSpec

# where each set lands by default (the raw flows' and the derived flows' exports)
DEFAULT_INPUTS: dict[SetKind, str] = {
    "ultrachat": "exports/ultrachat/ultrachat/ultrachat.parquet",
    "ultrafeedback": "exports/ultrafeedback/ultrafeedback.parquet",
    "sft": "exports/sft/ultrachat_200k",
    "dpo": "exports/dpo/ultrafeedback_binarized",
}


class TranslateRecipe(BaseModel):
    """One set into one language."""

    model_config = ConfigDict(extra="forbid")

    set: SetKind = Field(description="ultrachat | ultrafeedback (raw) | sft | dpo (derived).")
    input: str | None = Field(default=None, description="A Parquet file or a set folder with "
                              "data/<split>.parquet (lake path, absolute path or s3:// URL); "
                              "default: where that set lands.")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                             description="Output folder name (default: the input's name).")
    source_lang: str = Field(default="en", description="Suffix of the kept originals (`*_en`).")
    translation: TranslationSpec = Field(default_factory=TranslationSpec)
    feedback: bool = Field(default=False, description="UltraFeedback: translate rationales and "
                           "critiques too (the Japanese overview does).")
    flagged: Literal["keep", "exclude"] = Field(
        default="keep", description="Records with a chunk still failing its checks after the "
        "retranslations: kept (listed in flags.jsonl) or left out (listed too).")
    limit: int | None = Field(default=None, gt=0, description="Only the first N records of "
                              "each split (a sample, the demo).")
    batch_records: int = Field(default=200, gt=0, description="Records translated together: "
                               "their chunks share calls, memory stays bounded.")
    batch: BatchSpec = Field(default_factory=BatchSpec, description="The batch route's "
                             "settings, for `translation.route: batch`.")

    @property
    def lang(self) -> str:
        return self.translation.lang

    def input_path(self) -> str:
        return self.input or DEFAULT_INPUTS[self.set]
