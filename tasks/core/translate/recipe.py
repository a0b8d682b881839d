"""The translate recipe: which landed or exported set, into which language, how (docs/translation.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.translate.fields import Originals, SetKind
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
    source_lang: str = Field(default="en", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
                             description="Suffix of the kept originals (`*_en`).")
    originals: Originals = Field(default="columns", description="Where the English stays: "
                                 "`columns` (`<column>_en` after each column), `inline` (a "
                                 "`<field>_en` sibling of each text inside a struct) or `none`.")
    overview: bool = Field(default=False, description="Raw sets: also write overview/<split>."
                           "jsonl in the Japanese overview's layout (docs/translation.md#overview).")
    translation: TranslationSpec = Field(default_factory=TranslationSpec)
    feedback: bool = Field(default=False, description="UltraFeedback: translate rationales and "
                           "critiques too (the Japanese overview does).")
    flagged: Literal["keep", "exclude"] = Field(
        default="keep", description="Records with a chunk still failing its checks after the "
        "retranslations: kept (listed in flags.jsonl) or left out (listed too).")
    limit: int | None = Field(default=None, gt=0, description="Only the first N records of "
                              "each split (a sample, the demo).")
    batch_records: int = Field(default=200, gt=0, description="Records per shard: translated "
                               "together (their chunks share calls), landed together.")
    max_parallel_shards: int = Field(default=4, gt=0, description="Shards in flight at once.")
    dry_run_output_ratio: float = Field(
        default=1.5, gt=0, description="--dry-run: output tokens per source token. An assumption "
        "(Japanese usually takes more tokens than its English); set it from a real run's usage.")
    batch: BatchSpec = Field(default_factory=BatchSpec, description="The batch route's "
                             "settings, for `translation.route: batch`.")

    @model_validator(mode="after")
    def _overview_is_for_raw_sets(self) -> TranslateRecipe:
        if self.overview and self.set not in ("ultrachat", "ultrafeedback"):
            raise ValueError(f"overview: the Japanese overview shows the raw sets only, not {self.set!r}")
        return self

    @property
    def lang(self) -> str:
        return self.translation.lang

    def input_path(self) -> str:
        return self.input or DEFAULT_INPUTS[self.set]
