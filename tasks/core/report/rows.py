"""What the report reads, one typed row per aggregate (tasks/report/ fills them from the warehouse
with the SQL of sql.py, and the loss curves from the training runs' metrics.json).

Counts are aggregated in DuckDB: a row is a count per category (aspect and rating, split and
margin, ...), never one per rating or pair, so the report's memory does not grow with the lake.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tasks.core.usage import UsageRow

UNPARSED = "unparsed"  # the rating of an annotation whose reply never parsed (rating is null)


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Landed(_Row):
    """The calls of one model in one landed shard, at the time the shard's file was written.

    Neither the lake nor the journal has a time per request: a shard's file time is the finest
    clock there is (docs/monitoring.md#report)."""

    landed_at: AwareDatetime
    model: str
    requests: int = Field(0, ge=0, description="Paid requests (usage tables).")
    failed: int = Field(0, ge=0, description="Calls that failed for good (usage tables).")
    retries: int = Field(0, ge=0, description="Attempts beyond the first of generation calls "
                         "(uf_completions.attempts − 1): 429s, 5xx and timeouts, retried.")


class TableCount(_Row):
    """Rows of one warehouse view."""

    table: str
    rows: int = Field(ge=0)


class RatingCount(_Row):
    """Annotations of one aspect with one rating ("1".."5", "N/A" or UNPARSED)."""

    aspect: str
    rating: str
    count: int = Field(ge=0)


class MarginCount(_Row):
    """Pairs of one split of one DPO set whose score_chosen − score_rejected is `margin`."""

    set: str
    split: str
    margin: float
    pairs: int = Field(ge=0)


class ModelPicks(_Row):
    """How often one model's answer is the chosen or the rejected one in a DPO set's pairs."""

    set: str
    model: str
    chosen: int = Field(ge=0)
    rejected: int = Field(ge=0)


class RoundCount(_Row):
    """UltraChat dialogues of one sector that ran `rounds` rounds."""

    sector: str
    rounds: int = Field(ge=0)
    dialogues: int = Field(ge=0)


class StopCount(_Row):
    """UltraChat dialogues of one sector that stopped for one reason."""

    sector: str
    stop_reason: str
    dialogues: int = Field(ge=0)


class FlagCount(_Row):
    """Records of one translated set flagged for one reason (a record can have several)."""

    set: str = Field(description="The output folder under exports/: `<set>-<lang>/<name>`.")
    reason: str
    records: int = Field(ge=0)
    excluded: int = Field(ge=0, description="Of those, left out of the translated set.")


class LossCurve(_Row):
    """The training loss of one run per logged step, and its final eval loss if it had one."""

    run: str
    steps: list[int]
    loss: list[float]
    eval_loss: float | None = None

    @model_validator(mode="after")
    def _aligned(self) -> LossCurve:
        if len(self.steps) != len(self.loss):
            raise ValueError(f"run {self.run!r}: {len(self.steps)} steps but {len(self.loss)} "
                             "loss values")
        return self


class ReportData(BaseModel):
    """Everything one report shows; an empty list is a section with no data yet."""

    model_config = ConfigDict(extra="forbid")

    generated_at: datetime
    lake: str
    warehouse: str | None = Field(description="The DuckDB file read; None when there is none yet.")
    tables: list[TableCount] = Field(default_factory=list)
    endpoint_of: dict[str, str] = Field(default_factory=dict,
                                        description="Pool model → endpoint name, as configured.")
    landed: list[Landed] = Field(default_factory=list)
    usage: list[UsageRow] = Field(default_factory=list,
                                  description="Per `<flow>/<stage or role>`, model and route.")
    ratings: list[RatingCount] = Field(default_factory=list)
    margins: list[MarginCount] = Field(default_factory=list)
    picks: list[ModelPicks] = Field(default_factory=list)
    rounds: list[RoundCount] = Field(default_factory=list)
    stops: list[StopCount] = Field(default_factory=list)
    flags: list[FlagCount] = Field(default_factory=list)
    translated_sets: int = Field(0, ge=0, description="Translations found (flags.jsonl files).")
    training: list[LossCurve] = Field(default_factory=list)
