"""What a shard task returns (tasks/shards.py): small and typed, enough for the run's counts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.usage import UsageRow


class ShardSummary(BaseModel):
    """What a shard task returns: small, typed, and enough for the run's counts."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    key: str
    status: Literal["done", "partial", "pending", "skipped"] = Field(
        description="done: every call final; partial: some failed for good (rerun retries "
        "them); pending: some wait in batches (rerun collects them); skipped: nothing was "
        "missing")
    items: int = Field(0, description="Inputs the shard covered (prompts, dialogues, ...).")
    rows: int = Field(0, description="Result rows landed.")
    failures: int = Field(0, description="Jobs whose call failed for good.")
    pending: int = Field(0, description="Jobs waiting in batches that have not finished.")
    replies: int = Field(0, description="Judge replies received (annotation, critique).")
    unparsed: int = Field(0, description="Judge replies that did not parse completely.")
    waited_s: float = Field(0.0, description="Time spent waiting for another claimant's lease.")
    usage: list[UsageRow] = Field(default_factory=list)
